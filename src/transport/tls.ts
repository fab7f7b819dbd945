/**
 * Optional TLS for channels: a cluster CA that signs one certificate per
 * host, made with the `openssl` command line (P-256 keys, PEM files).
 *
 *     caDir/ca.crt, caDir/ca.key              generateClusterCa(caDir)
 *     outDir/<name>.crt, outDir/<name>.key    issueCertificate(caDir, name, addresses, outDir)
 *
 * A client trusts a server whose certificate the cluster CA signed for the
 * name or IP address the client dialled. With `requireClientCert` the server
 * asks the same of clients (mutual TLS); either way the token handshake
 * still runs inside TLS.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** PEM text (or the contents of a PEM file). */
export type Pem = string | Buffer;

export interface ServerTlsOptions {
  cert: Pem;
  key: Pem;
  /** The cluster CA; needed to verify client certificates. */
  ca?: Pem;
  /** Refuse clients without a certificate signed by `ca`. */
  requireClientCert?: boolean;
}

export interface ClientTlsOptions {
  /** The cluster CA the server's certificate must be signed by. */
  ca: Pem;
  /** This client's certificate and key, for servers that require one. */
  cert?: Pem;
  key?: Pem;
}

export interface CaFiles {
  cert: string;
  key: string;
}

export interface CertificateFiles {
  cert: string;
  key: string;
  /** The CA certificate that signed it. */
  ca: string;
}

const CA_DAYS = 3650;
const CERT_DAYS = 825;
const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;

function openssl(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, (error, _stdout, stderr) => {
      if (!error) return resolve();
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new Error('the openssl command is not installed (scripts/setup.sh installs it)', { cause: error }));
      } else {
        reject(new Error(`openssl ${args[0]} failed: ${stderr.trim() || error.message}`, { cause: error }));
      }
    });
  });
}

function caFiles(caDir: string): CaFiles {
  return { cert: path.join(caDir, 'ca.crt'), key: path.join(caDir, 'ca.key') };
}

/** Creates the cluster CA in `dir` (made if missing). Refuses to replace an existing one: every certificate it signed would stop working. */
export async function generateClusterCa(dir: string): Promise<CaFiles> {
  const files = caFiles(dir);
  fs.mkdirSync(dir, { recursive: true });
  if (fs.existsSync(files.key) || fs.existsSync(files.cert)) throw new Error(`${dir} already holds a cluster CA (ca.crt or ca.key)`);
  await openssl([
    'req', '-x509', '-new',
    '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', files.key, '-out', files.cert,
    '-days', String(CA_DAYS), '-sha256',
    '-subj', '/CN=Ferry cluster CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  fs.chmodSync(files.key, 0o600);
  return files;
}

/**
 * Issues a certificate for host `name`, valid for `name` and each of
 * `addresses` (IP addresses or DNS names), usable by servers and clients.
 * Writes `<name>.crt` and `<name>.key` to `outDir`.
 */
export async function issueCertificate(caDir: string, name: string, addresses: string[], outDir: string): Promise<CertificateFiles> {
  const ca = caFiles(caDir);
  if (!fs.existsSync(ca.cert) || !fs.existsSync(ca.key)) throw new Error(`${caDir} holds no cluster CA (ca.crt and ca.key); run generateClusterCa first`);
  for (const n of [name, ...addresses]) {
    if (!isIP(n) && !NAME.test(n)) throw new Error(`${JSON.stringify(n)} is neither an IP address nor a host name`);
  }
  if (isIP(name)) throw new Error(`the certificate name must be a host name, not the address ${name}`);
  const names = [...new Set([name, ...addresses])].map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`));
  fs.mkdirSync(outDir, { recursive: true });
  const files: CertificateFiles = { cert: path.join(outDir, `${name}.crt`), key: path.join(outDir, `${name}.key`), ca: ca.cert };
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-cert-'));
  try {
    const csr = path.join(work, 'req.csr');
    const ext = path.join(work, 'ext.cnf');
    fs.writeFileSync(
      ext,
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        'extendedKeyUsage=serverAuth,clientAuth',
        `subjectAltName=${names.join(',')}`,
        'authorityKeyIdentifier=keyid',
        'subjectKeyIdentifier=hash',
        '',
      ].join('\n'),
    );
    await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', files.key, '-out', csr, '-subj', `/CN=${name}`]);
    fs.chmodSync(files.key, 0o600);
    await openssl([
      'x509', '-req', '-in', csr,
      '-CA', ca.cert, '-CAkey', ca.key,
      // A random serial rather than a serial file next to the CA key.
      '-set_serial', `0x${randomBytes(16).toString('hex')}`,
      '-days', String(CERT_DAYS), '-sha256',
      '-extfile', ext, '-out', files.cert,
    ]);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return files;
}

/** Server options read from files issueCertificate wrote. */
export function serverTlsFromFiles(files: CertificateFiles, opts: { requireClientCert?: boolean } = {}): ServerTlsOptions {
  return { cert: fs.readFileSync(files.cert), key: fs.readFileSync(files.key), ca: fs.readFileSync(files.ca), requireClientCert: opts.requireClientCert ?? false };
}

/** Client options: the CA file, and this client's own certificate when the servers require one. */
export function clientTlsFromFiles(caCert: string, own?: CertificateFiles): ClientTlsOptions {
  const ca = fs.readFileSync(caCert);
  return own ? { ca, cert: fs.readFileSync(own.cert), key: fs.readFileSync(own.key) } : { ca };
}
