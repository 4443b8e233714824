#!/usr/bin/env node
// Test driver: the ux4iot 4.x wire protocol replayed with the real transport libraries,
// socket.io-client@4 and axios@1, call for call as ux4iot-react 4.1.8's Ux4iotApi and
// Ux4iot classes make them (session -> socket with ?sessionId -> grant -> last value ->
// subscription -> `data`). One JSON line per HTTP answer and socket event on stdout.
//
// Usage: node driver_v4.js '<scenario JSON>'   (or the scenario as the first stdin line)
//   scenario: {
//     "connectionString": "Endpoint=http://127.0.0.1:PORT/ux4iot;SharedAccessKey=KEY",
//     "devMode": true,        // 4.x dev mode: the key header on every REST call (default)
//     "transports": ["websocket","polling"],   // 4.x's socket option (the default here)
//     "reconnect": false,     // replay 4.x's reconnect: new session + socket after a server
//                             // disconnect, waiting "reconnectMs" (4.x: 5000)
//     "timeoutMs": 30000,     // hard deadline: the driver exits by itself then
//     "commands": [ ... ]     // run in order; more may follow as stdin lines
//   }
//   raw calls: session, connect, disconnect, grant, revokeGrant, subscribe, unsubscribe,
//     subscribeAll / unsubscribeAll ("form": "array" = react, a bare array with sessionId in
//     each element; "envelope" = admin-node subscribeAll, {subscriptionRequests} + sessionId
//     header; "arrayWithHeader" = admin-node unsubscribeAll, a bare array + header),
//     lastValue, lastValues, deviceTwin, connectionState, directMethod, patchDesired,
//     deleteSession, deleteSessions, http (any method/path/body/headers).
//   hooks (4.x call order): useTelemetry, useMultiTelemetry, useConnectionState,
//     useDeviceTwin, useD2CMessages, useDirectMethod, usePatchDesiredProperties, and
//     unuseTelemetry / unuseMultiTelemetry / unuse<Kind> for the unmount path.
//   control: waitFor {"event":"data","match":{...},"timeoutMs":N}, sleep {"ms":N}, exit.
//   output lines: http {cmd, method, path, status, body}, session, socket {type, reason,
//     transport}, data {payload}, waited / timeout, error, exit. Each carries "t" (ms).
'use strict';

const path = require('path');
const readline = require('readline');
const axios = require(path.join(__dirname, 'node_modules/axios')).default;
const { io } = require(path.join(__dirname, 'node_modules/socket.io-client'));

const started = Date.now();
const seen = []; // every emitted line, for waitFor
function emit(obj) {
  const line = { ...obj, t: Date.now() - started };
  seen.push(line);
  process.stdout.write(JSON.stringify(line) + '\n');
}
for (const name of ['log', 'info', 'warn', 'error', 'debug']) {
  console[name] = (...args) => process.stderr.write(args.map(String).join(' ') + '\n');
}

// ux4iot-react's parseConnectionString: split on ';', then on the first '='.
function parseConnectionString(text) {
  const parsed = {};
  for (const part of text.split(';')) {
    const i = part.indexOf('=');
    if (i >= 0) parsed[part.substring(0, i)] = part.substring(i + 1);
  }
  if (!parsed.Endpoint || !parsed.SharedAccessKey) throw new Error('Invalid Connection String');
  return parsed;
}

let scenario = null;
let endpoint = '';
let key = '';
let api = null; // axios instance, as Ux4iotApi builds it
let sessionId = '';
let socket = null;
let finished = false;
let reconnectTimer = null;

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

function finish(reason, code = 0) {
  if (finished) return;
  finished = true;
  emit({ event: 'exit', reason });
  clearTimeout(reconnectTimer);
  if (socket) socket.disconnect();
  setImmediate(() => process.exit(code));
}

async function call(cmd, method, url, { data, headers } = {}) {
  try {
    const response = await api.request({ method, url, data, headers });
    emit({ event: 'http', cmd, method, path: url, status: response.status, body: response.data });
    return response;
  } catch (e) {
    if (e.response) {
      emit({ event: 'http', cmd, method, path: url, status: e.response.status, body: e.response.data });
      return e.response;
    }
    emit({ event: 'error', cmd, method, path: url, message: e.message });
    return null;
  }
}

const sessionHeader = () => ({ sessionId });
const keyHeader = () => ({ 'Shared-Access-Key': key });

async function newSession() {
  const response = await call('session', 'post', '/session');
  if (response && response.status === 200) {
    sessionId = response.data.sessionId;
    emit({ event: 'session', sessionId });
  }
  return response;
}

// Ux4iot.initializeSocket: io(`${url}?sessionId=${id}`, {transports: ['websocket','polling']}).
// With "reconnect", the socket handlers replay Ux4iot.onConnect / onConnectError /
// onDisconnect / tryReconnect, quirks included: any non-client disconnect drops the current
// socket (even when an older socket is the one that closed) and, after the back-off, opens a
// new session and socket if none is set; every connect re-runs the hooks used so far, as the
// React context does from onSessionId.
let connects = 0;
const hooks = []; // use* commands run so far
function connect(transports) {
  const s = io(`${endpoint}?sessionId=${sessionId}`, { transports: transports || scenario.transports || ['websocket', 'polling'] });
  socket = s;
  const mine = sessionId;
  s.on('connect', () => {
    connects += 1;
    emit({ event: 'socket', type: 'connect', sessionId: mine, transport: s.io.engine.transport.name });
    s.io.engine.once('upgrade', t => emit({ event: 'socket', type: 'upgrade', transport: t.name }));
    if (scenario.reconnect) {
      clearTimeout(reconnectTimer);
      if (connects > 1) for (const h of hooks) enqueue({ ...h, replayed: true });
    }
  });
  s.on('connect_error', err => {
    emit({ event: 'socket', type: 'connect_error', sessionId: mine, reason: err.message });
    if (scenario.reconnect) tryReconnect(scenario.reconnectMs || 5000);
  });
  s.on('disconnect', reason => {
    emit({ event: 'socket', type: 'disconnect', sessionId: mine, reason });
    if (scenario.reconnect && reason !== 'io client disconnect') {
      socket = null;
      tryReconnect(scenario.reconnectMs || 5000);
    }
  });
  s.on('data', payload => emit({ event: 'data', payload }));
}

function tryReconnect(timeout) {
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(async () => {
    if (socket || finished) return;
    const response = await newSession();
    if (response && response.status === 200) connect();
    else tryReconnect(Math.min(timeout * 2, scenario.maxReconnectMs || 30000));
  }, timeout);
}

function waitFor(c) {
  const want = c.event || 'data';
  const match = c.match || {};
  const from = c.since || 0;
  const until = Date.now() + (c.timeoutMs || 10000);
  const matches = line => line.event === want && contains(line, match);
  return (async () => {
    while (Date.now() < until) {
      const hit = seen.slice(from).find(matches);
      if (hit) return emit({ event: 'waited', for: want, match, line: hit });
      await sleep(10);
    }
    emit({ event: 'timeout', for: want, match });
  })();
}

function contains(obj, pattern) {
  if (pattern === null || typeof pattern !== 'object') return obj === pattern;
  if (obj === null || typeof obj !== 'object') return false;
  return Object.entries(pattern).every(([k, v]) => contains(obj[k], v));
}

// Ux4iotApi.defaultGrantRequestFunction: any 2xx is GRANTED; the hooks stop otherwise
// (onGrantError with UNAUTHORIZED for 401, FORBIDDEN for 403, ERROR for the rest).
function granted(response) {
  const ok = !!response && response.status >= 200 && response.status < 300;
  if (!ok) {
    const status = response ? response.status : null;
    const result = status === 401 ? 'UNAUTHORIZED' : status === 403 ? 'FORBIDDEN' : 'ERROR';
    emit({ event: 'grantError', status, error: result });
  }
  return ok;
}

const grantOf = (type, deviceId, extra = {}) => ({ sessionId, deviceId, type, ...extra });
const subOf = (type, deviceId, extra = {}) => ({ sessionId, deviceId, type, ...extra });

async function run(c) {
  const dev = c.deviceId;
  if (c.cmd.startsWith('use') && !c.replayed) hooks.push(c);
  switch (c.cmd) {
    // -- raw calls ----------------------------------------------------------------------
    case 'session':
      return newSession();
    case 'connect':
      return connect(c.transports);
    case 'disconnect':
      if (socket) socket.disconnect();
      return emit({ event: 'socket', type: 'client-disconnect' });
    case 'grant':
      return call(c.cmd, 'put', '/grants', { data: { sessionId, ...c.grant }, headers: keyHeader() });
    case 'revokeGrant':
      return call(c.cmd, 'delete', '/grants', { data: { sessionId, ...c.grant }, headers: keyHeader() });
    case 'subscribe':
      return call(c.cmd, 'put', '/subscription', { data: { ...c.request, sessionId } });
    case 'unsubscribe':
      return call(c.cmd, 'delete', '/subscription', { data: { ...c.request, sessionId } });
    case 'subscribeAll':
    case 'unsubscribeAll': {
      const method = c.cmd === 'subscribeAll' ? 'put' : 'delete';
      const form = c.form || 'array';
      if (form === 'envelope') {
        return call(c.cmd, method, 'subscriptions', {
          data: { subscriptionRequests: c.requests },
          headers: sessionHeader(),
        });
      }
      if (form === 'arrayWithHeader') {
        return call(c.cmd, method, 'subscriptions', { data: c.requests, headers: sessionHeader() });
      }
      return call(c.cmd, method, '/subscriptions', { data: c.requests.map(r => ({ ...r, sessionId })) });
    }
    case 'lastValue':
      return call(c.cmd, 'get', `/lastValue/${dev}/${c.telemetryKey}`, { headers: sessionHeader() });
    case 'lastValues':
      return call(c.cmd, 'get', `/lastValue/${dev}`, { headers: sessionHeader() });
    case 'deviceTwin':
      return call(c.cmd, 'get', `/deviceTwin/${dev}`, { headers: sessionHeader() });
    case 'connectionState':
      return call(c.cmd, 'get', `/connectionState/${dev}`, { headers: sessionHeader() });
    case 'directMethod':
      return call(c.cmd, 'post', '/directMethod', { data: { deviceId: dev, methodParams: c.params }, headers: sessionHeader() });
    case 'patchDesired':
      return call(c.cmd, 'patch', '/deviceTwinDesiredProperties', {
        data: { deviceId: dev, desiredPropertyPatch: c.patch },
        headers: sessionHeader(),
      });
    case 'deleteSession':
      return call(c.cmd, 'delete', `/sessions/${c.sessionId || sessionId}`, { headers: keyHeader() });
    case 'deleteSessions':
      return call(c.cmd, 'delete', '/sessions', { headers: keyHeader() });
    case 'http':
      return call(c.cmd, c.method, c.path, { data: c.body, headers: c.headers });

    // -- hooks, in 4.x's call order (Ux4iot.subscribe / subscribeAllTelemetry / grant) ---------
    case 'useTelemetry':
      if (!granted(await call(c.cmd, 'put', '/grants', { data: grantOf('telemetry', dev, { telemetryKey: c.telemetryKey }), headers: keyHeader() }))) return;
      await call(c.cmd, 'get', `/lastValue/${dev}/${c.telemetryKey}`, { headers: sessionHeader() });
      return call(c.cmd, 'put', '/subscription', { data: subOf('telemetry', dev, { telemetryKey: c.telemetryKey }) });
    case 'unuseTelemetry':
      return call(c.cmd, 'delete', '/subscription', { data: subOf('telemetry', dev, { telemetryKey: c.telemetryKey }) });
    case 'useMultiTelemetry': {
      if (!granted(await call(c.cmd, 'put', '/grants', { data: grantOf('telemetry', dev, { telemetryKey: null }), headers: keyHeader() }))) return;
      await call(c.cmd, 'get', `/lastValue/${dev}`, { headers: sessionHeader() });
      const requests = c.telemetryKeys.map(k => subOf('telemetry', dev, { telemetryKey: k }));
      return run({ cmd: 'subscribeAll', form: c.form || 'array', requests });
    }
    case 'unuseMultiTelemetry': {
      const requests = c.telemetryKeys.map(k => subOf('telemetry', dev, { telemetryKey: k }));
      return run({ cmd: 'unsubscribeAll', form: c.form || 'array', requests });
    }
    case 'useConnectionState':
    case 'useDeviceTwin':
    case 'useD2CMessages': {
      const type = { useConnectionState: 'connectionState', useDeviceTwin: 'deviceTwin', useD2CMessages: 'd2cMessages' }[c.cmd];
      if (!granted(await call(c.cmd, 'put', '/grants', { data: grantOf(type, dev), headers: keyHeader() }))) return;
      if (type !== 'd2cMessages') {
        await call(c.cmd, 'get', `/${type}/${dev}`, { headers: sessionHeader() });
      }
      return call(c.cmd, 'put', '/subscription', { data: subOf(type, dev) });
    }
    case 'unuseConnectionState':
    case 'unuseDeviceTwin':
    case 'unuseD2CMessages': {
      const type = { unuseConnectionState: 'connectionState', unuseDeviceTwin: 'deviceTwin', unuseD2CMessages: 'd2cMessages' }[c.cmd];
      return call(c.cmd, 'delete', '/subscription', { data: subOf(type, dev) });
    }
    case 'useDirectMethod':
      if (!granted(await call(c.cmd, 'put', '/grants', {
        data: grantOf('directMethod', dev, { directMethodName: c.params.methodName }),
        headers: keyHeader(),
      }))) return;
      return run({ cmd: 'directMethod', deviceId: dev, params: c.params });
    case 'usePatchDesiredProperties':
      if (!granted(await call(c.cmd, 'put', '/grants', { data: grantOf('desiredProperties', dev), headers: keyHeader() }))) return;
      return run({ cmd: 'patchDesired', deviceId: dev, patch: c.patch });

    // -- control --------------------------------------------------------------------------
    case 'waitFor':
      return waitFor(c);
    case 'sleep':
      return sleep(c.ms || 0);
    case 'state':
      return emit({ event: 'state', sessionId, connected: !!(socket && socket.connected) });
    case 'exit':
      return finish('command');
    default:
      return emit({ event: 'error', cmd: c.cmd, message: 'unknown command' });
  }
}

let chain = Promise.resolve();
function enqueue(c) {
  chain = chain.then(() => (finished ? undefined : run(c))).catch(e => emit({ event: 'error', cmd: c.cmd, message: e && e.message }));
}

function start(s) {
  scenario = s;
  setTimeout(() => finish('deadline'), scenario.timeoutMs || 30000);
  try {
    ({ Endpoint: endpoint, SharedAccessKey: key } = parseConnectionString(scenario.connectionString));
  } catch (e) {
    emit({ event: 'error', cmd: 'start', message: e.message });
    return finish('bad connection string', 2);
  }
  // Ux4iotApi: dev mode puts the key header on every call; prod mode has none.
  api = axios.create({ baseURL: endpoint, headers: scenario.devMode === false ? {} : keyHeader() });
  for (const c of scenario.commands || []) enqueue(c);
}

function parse(line) {
  try {
    return JSON.parse(line);
  } catch (e) {
    emit({ event: 'error', cmd: 'parse', message: `not JSON: ${line.slice(0, 200)}` });
    return null;
  }
}

const rl = readline.createInterface({ input: process.stdin });
if (process.argv[2]) {
  const s = parse(process.argv[2]);
  if (s) start(s);
  else finish('bad scenario', 2);
}
rl.on('line', line => {
  if (!line.trim()) return;
  const obj = parse(line);
  if (!obj) return;
  if (!scenario) start(obj);
  else enqueue(obj);
});
