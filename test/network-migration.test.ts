import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { kill } from '../src/native/process.js';
import { lastJsonOf, migrate } from './helpers/cli.js';
import { ROOT } from './helpers/paths.js';
import { initOf, ok, running, useLab, verdict, waitReady } from './helpers/lab.js';
import { waitFor } from './helpers/wait.js';


interface Stats {
  sent: number;
  echoed: number;
  maxGapMs: number;
  error: string | null;
  done: boolean;
}


const ADDRESS = '10.77.0.150';
const PORT = 7000;

/**
 * The test the network work is for: a client outside the container (in the
 * root namespace, like any user) streams numbered records to a server inside
 * it and reads the echo back, without pause, while the container moves
 * lab-1 → lab-2 → lab-3 with its address. The client must see no error and
 * every record once and in order; the longest gap it saw is printed.
 */
describe('TCP connections survive migrations between lab hosts', function () {
  this.timeout(240_000);
  const lab = useLab(3, ['echo_server.py', 'stream_client.py'].map((f) => path.join(ROOT, 'test/workloads', f)));
  let client: ChildProcess | null = null;

  after(() => client?.kill('SIGKILL'));



  function stats(file: string): Stats | null {
    try {
      return JSON.parse(fs.readFileSync(file, 'utf8')) as Stats;
    } catch {
      return null;
    }
  }

  it('a client streaming through two moves sees no error, every record once and in order; a new connection is accepted after cutover', async () => {
    ok(await migrate(['run', 'echo', '--host', 'lab-1', '--ip', `${ADDRESS}/24`, '--gateway', '10.77.0.1', '--', 'python3', path.join(lab.binDir, 'echo_server.py'), '/tmp/result', String(PORT)]));
    await waitReady('echo', 'the echo server to listen');

    const statsFile = path.join(lab.configDir, 'client.json');
    client = spawn('python3', [path.join(lab.binDir, 'stream_client.py'), statsFile, ADDRESS, String(PORT)], { stdio: 'ignore' });
    const echoedPast = async (n: number) => waitFor(`the client to get ${n} echoes`, () => {
      const s = stats(statsFile);
      if (s?.error) throw new Error(`the client failed: ${s.error}`);
      return (s?.echoed ?? 0) >= n;
    }, 60_000);
    await echoedPast(300);

    const gaps: string[] = [];
    for (const to of ['lab-2', 'lab-3']) {
      const result = await migrate(['--json', 'echo', '--to', to]);
      ok(result);
      const report = lastJsonOf<{ frozenMs: number }>(result);
      gaps.push(`${to}: frozen ${report.frozenMs.toFixed(0)} ms`);
      assert.deepEqual((await running('echo')).map((c) => c.host), [to]);
      await echoedPast((stats(statsFile)?.echoed ?? 0) + 300);
    }

    // A listening socket that moved accepts right away on its new host.
    const fresh = await new Promise<string>((resolve, reject) => {
      const py = spawn('python3', ['-c', `import socket; s = socket.create_connection(("${ADDRESS}", ${PORT}), timeout=5); s.sendall(b"ping"); print(s.recv(4).decode())`]);
      let out = '';
      py.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      py.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`a new connection failed (exit ${code})`))));
    });
    assert.equal(fresh, 'ping');

    client.kill('SIGTERM');
    await waitFor('the client to finish', () => stats(statsFile)?.done === true, 30_000);
    const final = stats(statsFile)!;
    assert.equal(final.error, null);
    assert.equal(final.echoed, final.sent, 'every record came back');
    console.log(`      client: ${final.sent} records, every one once and in order; longest gap ${final.maxGapMs.toFixed(0)} ms (${gaps.join(', ')})`);

    assert.equal(await verdict('echo'), 'PASS');
  });

  it('the other way round: a container that is the client of a server outside streams through two moves without an error', async () => {
    // The server runs here, in the root namespace, on the lab bridge's address.
    const serverDir = fs.mkdtempSync(path.join(lab.configDir, 'server-'));
    const server = spawn('python3', [path.join(lab.binDir, 'echo_server.py'), path.join(serverDir, 'result'), String(PORT + 1)], { stdio: 'ignore' });
    try {
      await waitFor('the server outside to listen', () => fs.existsSync(path.join(serverDir, 'result.ready')), 30_000);
      ok(await migrate(['run', 'client', '--host', 'lab-1', '--ip', '10.77.0.151/24', '--gateway', '10.77.0.1', '--', 'python3', path.join(lab.binDir, 'stream_client.py'), '/tmp/stats', '10.77.0.1', String(PORT + 1)]));
      const statsOf = async (): Promise<Stats | null> => {
        const init = await initOf('client');
        return init === null ? null : stats(`/proc/${init}/root/tmp/stats`);
      };
      const echoedPast = async (n: number) => waitFor(`the client in the container to get ${n} echoes`, async () => {
        const s = await statsOf();
        if (s?.error) throw new Error(`the client failed: ${s.error}`);
        return (s?.echoed ?? 0) >= n;
      }, 60_000);
      await echoedPast(300);
      for (const to of ['lab-2', 'lab-3']) {
        ok(await migrate(['--json', 'client', '--to', to]));
        assert.deepEqual((await running('client')).map((c) => c.host), [to]);
        await echoedPast(((await statsOf())?.echoed ?? 0) + 300);
      }
      const init = (await initOf('client'))!;
      const tmp = fs.openSync(`/proc/${init}/root/tmp`, 'r');
      try {
        kill(init, 15);
        await waitFor('the client to finish', () => stats(`/proc/self/fd/${tmp}/stats`)?.done === true, 30_000);
        const final = stats(`/proc/self/fd/${tmp}/stats`)!;
        assert.equal(final.error, null);
        assert.equal(final.echoed, final.sent, 'every record came back');
        console.log(`      client in the container: ${final.sent} records, every one once and in order; longest gap ${final.maxGapMs.toFixed(0)} ms`);
      } finally {
        fs.closeSync(tmp);
      }
      server.kill('SIGTERM');
      await waitFor('the server outside to give its verdict', () => fs.existsSync(path.join(serverDir, 'result')), 30_000);
      assert.equal(fs.readFileSync(path.join(serverDir, 'result'), 'utf8').trim(), 'PASS', 'the server outside saw no reset');
    } finally {
      server.kill('SIGKILL');
    }
  });
});
