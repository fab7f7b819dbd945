import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  clientTlsFromFiles,
  generateClusterCa,
  issueCertificate,
  serverTlsFromFiles,
  type CertificateFiles,
  type ServerTlsOptions,
} from '../../src/transport/index.js';
import { waitFor } from '../helpers/wait.js';
import { Echo, EchoReply, dial, rejectsWith, startServer, useCleanup } from './helpers.js';

describe('transport: TLS', function () {
  this.timeout(20_000);
  useCleanup();
  let dir = '';
  let ca = '';
  let server: CertificateFiles;
  let client: CertificateFiles;
  let stranger: CertificateFiles;
  let misnamed: CertificateFiles;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-tls-'));
    ca = (await generateClusterCa(path.join(dir, 'ca'))).cert;
    await generateClusterCa(path.join(dir, 'other-ca'));
    [server, client, stranger, misnamed] = await Promise.all([
      issueCertificate(path.join(dir, 'ca'), 'server', ['127.0.0.1'], path.join(dir, 'certs')),
      issueCertificate(path.join(dir, 'ca'), 'laptop', [], path.join(dir, 'certs')),
      issueCertificate(path.join(dir, 'other-ca'), 'stranger', ['127.0.0.1'], path.join(dir, 'other-certs')),
      issueCertificate(path.join(dir, 'ca'), 'elsewhere', ['10.9.9.9'], path.join(dir, 'certs')),
    ]);
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function tlsServer(tls: ServerTlsOptions) {
    return startServer({ tls });
  }

  it('writes PEM files, the keys readable by their owner only', () => {
    assert.match(fs.readFileSync(server.cert, 'utf8'), /^-----BEGIN CERTIFICATE-----/);
    assert.match(fs.readFileSync(server.key, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    assert.equal(fs.statSync(server.key).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.join(dir, 'ca', 'ca.key')).mode & 0o777, 0o600);
    return assert.rejects(generateClusterCa(path.join(dir, 'ca')), /already holds a cluster CA/);
  });

  it('connects to a server whose certificate the cluster CA signed', async () => {
    const s = await tlsServer(serverTlsFromFiles(server));
    const channel = await dial(s.address, { tls: clientTlsFromFiles(ca) });
    assert.equal((await channel.request(Echo.make({ text: 'over tls' }), EchoReply)).text, 'over tls');
  });

  it('refuses a server signed by another CA, or certified for another address', async () => {
    const s = await tlsServer(serverTlsFromFiles(stranger));
    await rejectsWith(dial(s.address, { tls: clientTlsFromFiles(ca) }), 'TLS', new RegExp(`^agent at ${s.address} presented a certificate the cluster CA did not sign`));
    await waitFor('the server to log the failed TLS handshake', () => s.logs.length > 0);
    assert.equal(s.logs.length, 1);
    assert.match(s.logs[0]!, /^refused a connection: TLS handshake failed: .*it may not trust this agent's certificate/);

    const wrongName = await tlsServer(serverTlsFromFiles(misnamed));
    await rejectsWith(dial(wrongName.address, { tls: clientTlsFromFiles(ca) }), 'TLS', /the certificate of agent at .* is for another host: .*127\.0\.0\.1/);
  });

  it('with requireClientCert, refuses clients without a certificate of the cluster', async () => {
    const s = await tlsServer(serverTlsFromFiles(server, { requireClientCert: true }));
    await rejectsWith(dial(s.address, { tls: clientTlsFromFiles(ca) }), 'TLS', /requires a client certificate, and this client has none/);
    await rejectsWith(dial(s.address, { tls: { ...clientTlsFromFiles(ca), cert: fs.readFileSync(stranger.cert), key: fs.readFileSync(stranger.key) } }), 'TLS', /(refused this client's certificate|does not trust this client's certificate)/);
    const channel = await dial(s.address, { tls: clientTlsFromFiles(ca, client) });
    assert.equal((await channel.request(Echo.make({ text: 'mutual' }), EchoReply)).text, 'mutual');
    await waitFor('two refusals logged', () => s.logs.length >= 2);
    assert.equal(s.logs.length, 2);
  });

  it('says so when one end speaks TLS and the other does not', async () => {
    const secure = await tlsServer(serverTlsFromFiles(server));
    await rejectsWith(dial(secure.address), 'CONNECT', /does it require TLS\?/);
    const plain = await startServer();
    await rejectsWith(dial(plain.address, { tls: clientTlsFromFiles(ca) }), 'TLS', /does not speak TLS/);
  });
});
