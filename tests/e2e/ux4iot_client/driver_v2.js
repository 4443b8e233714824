#!/usr/bin/env node
// Test driver: the real `Ux4iot` class of ux4iot-react@2.0.2 (lib/Ux4iot.js, no React),
// driven by JSON commands, reporting every callback and socket event as one JSON line.
//
// Usage: node driver_v2.js '<scenario JSON>'   (or the scenario as the first stdin line)
//   scenario: {
//     "connectionString": "Endpoint=http://127.0.0.1:PORT/ux4iot;SharedAccessKey=KEY",
//     "timeoutMs": 30000,          // hard deadline: the driver exits by itself then
//     "waitForConnect": true,      // wait for the socket before running the commands
//     "commands": [ {cmd...}, ... ]  // run in order; more may follow as stdin lines
//   }
//   commands (each awaited before the next):
//     {"cmd":"subscribeTelemetry","deviceId":"d","telemetryKey":"t","subscriberId":"s1"}
//     {"cmd":"unsubscribeTelemetry","deviceId":"d","telemetryKey":"t","subscriberId":"s1"}
//     {"cmd":"subscribeConnectionState"|"subscribeDeviceTwin"|"subscribeD2C","deviceId":"d"}
//     {"cmd":"unsubscribeConnectionState"|"unsubscribeDeviceTwin"|"unsubscribeD2C", ...}
//     {"cmd":"invokeDirectMethod","deviceId":"d","params":{"methodName":"m","payload":{}}}
//     {"cmd":"patchDesiredProperties","deviceId":"d","patch":{"k":1}}
//     {"cmd":"waitForConnect","timeoutMs":10000}
//     {"cmd":"state"}   {"cmd":"exit"}
//   output lines ({"event": ...}): created, session, socket (connect / disconnect /
//     connect_error, from the class's own handlers), telemetry, connectionState,
//     deviceTwin, d2cMessage, grantError, subscribed, result, error, state, exit.
// Subscribers default to subscriberId "driver". Every line carries "t" (ms since start).
'use strict';

const path = require('path');
const readline = require('readline');

const started = Date.now();
function emit(obj) {
  process.stdout.write(JSON.stringify({ ...obj, t: Date.now() - started }) + '\n');
}
// The library logs through console (console.log for its dev-mode banner): keep stdout for
// the JSON lines only.
for (const name of ['log', 'info', 'warn', 'error', 'debug']) {
  console[name] = (...args) => process.stderr.write(args.map(String).join(' ') + '\n');
}

const { Ux4iot } = require(path.join(__dirname, 'node_modules/ux4iot-react/lib/Ux4iot.js'));

// Observe the class's own socket handlers and session fetches without changing them.
const proto = Ux4iot.prototype;
const origInitSessionId = proto.initSessionId;
proto.initSessionId = async function () {
  await origInitSessionId.call(this);
  emit({ event: 'session', sessionId: this.sessionId });
};
const origOnConnect = proto.onConnect;
proto.onConnect = function () {
  const transport = this.socket && this.socket.io.engine ? this.socket.io.engine.transport.name : null;
  emit({ event: 'socket', type: 'connect', sessionId: this.sessionId, transport });
  return origOnConnect.call(this);
};
const origOnErrorOrDisconnect = proto.onErrorOrDisconnect;
proto.onErrorOrDisconnect = function (error) {
  const reason = typeof error === 'string' ? error : error && error.message;
  emit({ event: 'socket', type: typeof error === 'string' ? 'disconnect' : 'connect_error', reason });
  return origOnErrorOrDisconnect.call(this, error);
};

let ux = null;
let finished = false;

function finish(reason, code = 0) {
  if (finished) return;
  finished = true;
  emit({ event: 'exit', reason });
  try {
    if (ux) ux.destroy();
  } catch (e) {
    // destroying a half-open client must not hide the exit line
  }
  setImmediate(() => process.exit(code));
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

async function waitForConnect(timeoutMs) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (ux && ux.socket && ux.socket.connected) return true;
    await sleep(20);
  }
  return false;
}

function errorOf(e) {
  if (e && e.response) return { status: e.response.status, body: e.response.data };
  return { message: e && e.message ? e.message : String(e) };
}

const callbacks = {
  telemetry: (subscriberId, telemetryKey) => (deviceId, value, timestamp) =>
    emit({ event: 'telemetry', subscriberId, telemetryKey, deviceId, value, timestamp }),
  connectionState: () => (deviceId, connected) =>
    emit({ event: 'connectionState', deviceId, connected }),
  deviceTwin: () => (deviceId, twin) => emit({ event: 'deviceTwin', deviceId, twin }),
  d2c: () => (deviceId, message, timestamp) =>
    emit({ event: 'd2cMessage', deviceId, message, timestamp }),
};

async function run(c) {
  const sub = c.subscriberId || 'driver';
  const onError = error => emit({ event: 'grantError', cmd: c.cmd, deviceId: c.deviceId, error });
  switch (c.cmd) {
    case 'subscribeTelemetry': {
      const cb = callbacks.telemetry(sub, c.telemetryKey);
      const state = await ux.registerTelemetrySubscriber(sub, c.deviceId, c.telemetryKey, cb, onError);
      return emit({ event: 'subscribed', cmd: c.cmd, state });
    }
    case 'unsubscribeTelemetry': {
      const state = await ux.unregisterTelemetrySubscriber(sub, c.deviceId, c.telemetryKey);
      return emit({ event: 'unsubscribed', cmd: c.cmd, state });
    }
    case 'subscribeConnectionState': {
      const state = await ux.registerConnectionStateSubscriber(sub, c.deviceId, callbacks.connectionState(), onError);
      return emit({ event: 'subscribed', cmd: c.cmd, state });
    }
    case 'unsubscribeConnectionState': {
      const state = await ux.unregisterConnectionStateSubscriber(sub, c.deviceId);
      return emit({ event: 'unsubscribed', cmd: c.cmd, state });
    }
    case 'subscribeDeviceTwin': {
      const state = await ux.registerDeviceTwinSubscriber(sub, c.deviceId, callbacks.deviceTwin(), onError);
      return emit({ event: 'subscribed', cmd: c.cmd, state });
    }
    case 'unsubscribeDeviceTwin': {
      const state = await ux.unregisterDeviceTwinSubscriber(sub, c.deviceId);
      return emit({ event: 'unsubscribed', cmd: c.cmd, state });
    }
    case 'subscribeD2C': {
      const state = await ux.registerRawD2CMessageSubscriber(sub, c.deviceId, callbacks.d2c(), onError);
      return emit({ event: 'subscribed', cmd: c.cmd, state });
    }
    case 'unsubscribeD2C': {
      const state = await ux.unregisterRawD2CMessageSubscriber(sub, c.deviceId);
      return emit({ event: 'unsubscribed', cmd: c.cmd, state });
    }
    case 'invokeDirectMethod':
      try {
        const result = await ux.invokeDirectMethod(c.deviceId, c.params, onError);
        return emit({ event: 'result', cmd: c.cmd, result: result === undefined ? null : result });
      } catch (e) {
        return emit({ event: 'error', cmd: c.cmd, ...errorOf(e) });
      }
    case 'patchDesiredProperties':
      try {
        const result = await ux.patchDesiredProperties(c.deviceId, c.patch, onError);
        return emit({ event: 'result', cmd: c.cmd, result: result === undefined ? null : result });
      } catch (e) {
        return emit({ event: 'error', cmd: c.cmd, ...errorOf(e) });
      }
    case 'waitForConnect': {
      const connected = await waitForConnect(c.timeoutMs || 10000);
      return emit({ event: 'state', cmd: c.cmd, sessionId: ux.sessionId, connected });
    }
    case 'state':
      return emit({
        event: 'state',
        sessionId: ux.sessionId,
        connected: !!(ux.socket && ux.socket.connected),
      });
    case 'exit':
      return finish('command');
    default:
      return emit({ event: 'error', cmd: c.cmd, message: 'unknown command' });
  }
}

// Commands run one at a time, in arrival order, whether from the scenario or stdin, and only
// once the client exists (stdin lines may arrive before Ux4iot.create resolves).
let chain = Promise.resolve();
let early = []; // stdin commands that came before the client existed; null once it does
function enqueue(c) {
  if (early !== null) {
    early.push(c);
    return;
  }
  chain = chain.then(() => (finished ? undefined : run(c))).catch(e => emit({ event: 'error', cmd: c.cmd, ...errorOf(e) }));
}

async function main(scenario) {
  setTimeout(() => finish('deadline'), scenario.timeoutMs || 30000);
  try {
    ux = await Ux4iot.create({ adminConnectionString: scenario.connectionString });
  } catch (e) {
    emit({ event: 'error', cmd: 'create', ...errorOf(e) });
    return finish('create failed', 1);
  }
  emit({ event: 'created', sessionId: ux.sessionId });
  if (scenario.waitForConnect !== false) {
    const connected = await waitForConnect(scenario.connectTimeoutMs || 10000);
    emit({ event: 'state', cmd: 'waitForConnect', sessionId: ux.sessionId, connected });
  }
  const pending = [...(scenario.commands || []), ...early];
  early = null;
  for (const c of pending) enqueue(c);
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
let scenario = process.argv[2] ? parse(process.argv[2]) : null;
if (process.argv[2] && !scenario) finish('bad scenario', 2);
if (scenario) main(scenario);
rl.on('line', line => {
  if (!line.trim()) return;
  const obj = parse(line);
  if (!obj) return;
  if (!scenario) {
    scenario = obj;
    main(scenario);
  } else {
    enqueue(obj);
  }
});
