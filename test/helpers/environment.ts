/**
 * Loaded by mocha before any test (.mocharc.json "require"): the tests and
 * the CLI they start must not read or write this machine's cluster
 * configuration (/etc/ferry), where a demo or an operator may have put a
 * real one. Suites that need an inventory make their own.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-test-config-'));
process.env['FERRY_CONFIG_DIR'] = path.join(dir, 'none');
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
