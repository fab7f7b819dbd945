/**
 * One end of a transfer for the migration benchmark, run inside a lab host
 * (`migrate lab exec <host> -- node dist/bench/lib/peer.js ...`) or on the
 * machine. Receivers print "listening" once they accept connections, then
 * serve exactly one transfer; both ends print one JSON line with what they
 * measured, and exit.
 *
 *   tcp-recv <ip> <port>                                   plain TCP, bytes counted
 *   tcp-send <ip> <port> <MiB>
 *   stream-recv <ip> <port> <token> [<cert> <key>]         a Ferry channel stream (TLS with a cert)
 *   stream-send <ip> <port> <token> <MiB> <write-MiB> [<ca>]
 *
 * The data is random (nothing on the way can squeeze it) and generated once:
 * the sender measures the transfer, not its random number generator.
 */
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { clientTlsFromFiles, connect, listen } from '../../src/transport/index.js';

const MIB = 1 << 20;
/** A peer left waiting (its benchmark died) gives up rather than linger in the lab host. */
const IDLE_EXIT_MS = 300_000;

function print(result: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

function randomBlock(bytes: number): Buffer {
  return randomFillSync(Buffer.allocUnsafe(bytes));
}

/** The receiver measures from the first byte to the last: connection setup is not throughput. */
function tcpRecv(ip: string, port: number): void {
  const server = net.createServer((socket) => {
    let bytes = 0;
    let first = 0;
    socket.on('data', (chunk: Buffer) => {
      if (!first) first = performance.now();
      bytes += chunk.length;
    });
    socket.on('end', () => {
      print({ bytes, ms: performance.now() - first });
      socket.end();
      server.close();
    });
  });
  server.listen(port, ip, () => process.stdout.write('listening\n'));
}

async function tcpSend(ip: string, port: number, mib: number): Promise<void> {
  const block = randomBlock(MIB);
  const socket = net.connect({ host: ip, port });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const started = performance.now();
  for (let i = 0; i < mib; i++) {
    if (!socket.write(block)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  socket.end();
  // The receiver ends its side once it has read everything: until then the data is not across.
  await new Promise<void>((resolve, reject) => socket.once('close', () => resolve()).once('error', reject).resume());
  print({ bytes: mib * MIB, ms: performance.now() - started });
}

async function streamRecv(ip: string, port: number, token: string, cert?: string, key?: string): Promise<void> {
  const tls = cert && key ? { cert: fs.readFileSync(cert), key: fs.readFileSync(key) } : undefined;
  const server = await listen({
    host: ip,
    port,
    token,
    hostName: 'bench-receiver',
    ...(tls ? { tls } : {}),
    onChannel: (channel) => {
      let bytes = 0;
      let chunks = 0;
      let first = 0;
      let last = 0;
      channel.onStream('bench', async (reader) => {
        for await (const { payload } of reader) {
          if (!first) first = performance.now();
          bytes += payload.byteLength;
          chunks++;
        }
        last = performance.now();
      });
      // The sender closes once its end() has been confirmed; closing here first could lose that confirmation.
      void channel.closed.then(async () => {
        print({ bytes, chunks, ms: last - first });
        await server.close();
      });
    },
  });
  process.stdout.write(`listening ${server.address}\n`);
}

async function streamSend(ip: string, port: number, token: string, mib: number, writeMib: number, ca?: string): Promise<void> {
  const block = randomBlock(writeMib * MIB);
  const channel = await connect(`${ip}:${port}`, { token, role: 'agent', hostName: 'bench-sender', ...(ca ? { tls: clientTlsFromFiles(ca) } : {}) });
  const writer = channel.openStream('bench');
  const started = performance.now();
  // One write at a time, each awaited, as the image sink feeds its streams.
  for (let sent = 0; sent < mib; sent += writeMib) await writer.write(block);
  await writer.end();
  const ms = performance.now() - started;
  print({ bytes: mib * MIB, ms, maxChunkBytes: writer.maxChunkBytes, window: writer.stats.window, chunks: writer.stats.chunks });
  await channel.close();
}

async function main(argv: string[]): Promise<void> {
  const [mode, ip, port, ...rest] = argv;
  if (!ip || !port) throw new Error('usage: peer.js <tcp-recv|tcp-send|stream-recv|stream-send> <ip> <port> ...');
  setTimeout(() => {
    process.stderr.write(`peer ${mode}: the transfer did not end within ${IDLE_EXIT_MS / 1000} s, giving up\n`);
    process.exit(1);
  }, IDLE_EXIT_MS).unref();
  switch (mode) {
    case 'tcp-recv':
      return tcpRecv(ip, Number(port));
    case 'tcp-send':
      return tcpSend(ip, Number(port), Number(rest[0]));
    case 'stream-recv':
      return streamRecv(ip, Number(port), rest[0]!, rest[1], rest[2]);
    case 'stream-send':
      return streamSend(ip, Number(port), rest[0]!, Number(rest[1]), Number(rest[2]), rest[3]);
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`peer: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
