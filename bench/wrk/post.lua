-- POST a JSON body (BENCH_BODY) with optional Authorization (BENCH_AUTHORIZATION, e.g. the
-- device's "SharedAccessSignature sr=...&sig=...&se=..."). Every request is the same message.
local auth = os.getenv("BENCH_AUTHORIZATION")
if auth and auth ~= "" then
   wrk.headers["Authorization"] = auth
end
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"temperature": 21.5}'
wrk.headers["Content-Type"] = "application/json"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
