// A virtbus event subscriber with nats.js.
//
// It reads events through a durable JetStream consumer of its own on the
// VIRTBUS_EVENTS stream: what it acknowledged is never delivered again, and
// whatever was published while it was down is delivered when it comes back.
// One JSON line per event on stdout: {"seq", "type", "subject", "detail", "name"}.
//
//   npm ci
//   NATS_URL=nats://virtbus-readonly:PASSWORD@host:4222 NATS_INBOX_PREFIX=<the role's> \
//   node subscriber.mjs \
//       --durable my-tool [--filter 'virtbus.event.secret.>'] [--idle-ms 3000]
//
// --idle-ms: exit 0 after that long without an event (for scripts and tests);
// without it, it runs until SIGINT/SIGTERM.
import { connect, AckPolicy, DeliverPolicy } from "nats";

const STREAM = "VIRTBUS_EVENTS";

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const durable = option("durable");
if (!durable) {
  console.error("usage: subscriber.mjs --durable NAME [--filter SUBJECT] [--idle-ms MS]");
  process.exit(2);
}
const filter = option("filter", "virtbus.event.>");
const idleMs = Number(option("idle-ms", "0"));

// nats.js takes the user and password apart from the server address.
const url = new URL(process.env.NATS_URL ?? "nats://127.0.0.1:4222");
const nc = await connect({
  servers: `${url.hostname}:${url.port || 4222}`,
  user: url.username ? decodeURIComponent(url.username) : undefined,
  pass: url.password ? decodeURIComponent(url.password) : undefined,
  name: `virtbus-subscriber-${durable}`,
  // A virtbus role may receive replies on its own inbox prefix only.
  inboxPrefix: process.env.NATS_INBOX_PREFIX ?? "_INBOX",
});

// The consumer is made once; later runs find it with its position.
const jsm = await nc.jetstreamManager();
try {
  await jsm.consumers.info(STREAM, durable);
} catch {
  await jsm.consumers.add(STREAM, {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.New,
    filter_subject: filter,
    ack_wait: 30_000_000_000, // ns
    max_deliver: 10,
  });
}

const consumer = await nc.jetstream().consumers.get(STREAM, durable);
let stopping = false;
const stop = () => { stopping = true; };
process.on("SIGINT", stop);
process.on("SIGTERM", stop);

const messages = await consumer.consume({ max_messages: 100, expires: 1000 });
let idleTimer = null;
const armIdle = () => {
  if (!idleMs) return;
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => messages.stop(), idleMs);
};
armIdle();
const watchStop = setInterval(() => { if (stopping) messages.stop(); }, 200);

for await (const m of messages) {
  const event = JSON.parse(new TextDecoder().decode(m.data));
  process.stdout.write(JSON.stringify({
    seq: m.info.streamSequence,
    type: event.type,
    subject: m.subject,
    detail: event.data?.detail ?? null,
    name: event.data?.name ?? null,
  }) + "\n");
  m.ack();
  armIdle();
}
clearInterval(watchStop);
clearTimeout(idleTimer);
await nc.drain();
