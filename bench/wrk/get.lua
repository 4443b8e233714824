-- GET with optional Authorization (BENCH_AUTHORIZATION, e.g. "Bearer <token>").
local auth = os.getenv("BENCH_AUTHORIZATION")
if auth and auth ~= "" then
   wrk.headers["Authorization"] = auth
end
wrk.method = "GET"

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")
