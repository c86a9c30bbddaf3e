// Submit a delayed job and a cron job to chronoq from Node.js, over AMQP.
//
// chronoq's timers consume `<namespace>.submit` (a fanout exchange), store each job in Postgres
// and ack only after the commit; a publisher confirm here therefore means "durably accepted".
// The JSON follows `chronoq schema` (schemas/submission.schema.json in the repository).
//
//   npm install && AMQP_URL=amqp://guest:guest@localhost:5672/ node submit.js my.queue
const amqp = require('amqplib');

const url = process.env.AMQP_URL || 'amqp://guest:guest@localhost:5672/';
const namespace = process.env.CHRONOQ_NAMESPACE || 'chronoq';
const queue = process.argv[2] || 'node.greetings';

async function main() {
  const connection = await amqp.connect(url);
  try {
    const channel = await connection.createConfirmChannel();
    const exchange = `${namespace}.submit`;
    await channel.checkExchange(exchange); // declared by `chronoq migrate` and by every timer
    const submit = (job) => new Promise((resolve, reject) => {
      channel.publish(exchange, '', Buffer.from(JSON.stringify(job)), {
        persistent: true,
        contentType: 'application/json',
        appId: 'chronoq-node-example',
      }, (err) => (err ? reject(err) : resolve()));
    });
    await submit({kind: 'once', queue, payload: {greeting: 'hello from node', n: 1}, delay_s: 1, key: 'node-once'});
    await submit({kind: 'cron', queue, payload: {greeting: 'tick from node'}, cron: '* * * * * *',
                  timezone: 'Europe/Berlin', misfire: 'skip', key: 'node-cron'});
    await channel.waitForConfirms();
    console.log(`submitted 2 jobs to ${exchange}`);
  } finally {
    await connection.close();
  }
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
