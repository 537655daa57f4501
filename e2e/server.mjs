// The server binary for the end-to-end tests: STOCKROOM_BIN (default target/debug/stockroom)
// on a free port with a SQLite file and API keys; its log goes to e2e/artifacts/server-N.log.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const HERE = dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = join(HERE, 'artifacts');
export const BIN = resolve(HERE, '..', process.env.STOCKROOM_BIN || 'target/debug/stockroom');
let starts = 0;

mkdirSync(ARTIFACTS, { recursive: true });

export class Server {
  /** `keys`: the API keys; `null` starts the open first-run mode (no keys, loopback only). */
  constructor(dbPath, keys) {
    this.dbPath = dbPath;
    this.keys = keys;
    this.process = null;
    this.url = null;
    this.starts = 0;
  }

  /** Starts the binary; `listen` defaults to a free port, a restart reuses the previous one. */
  async start(listen = '127.0.0.1:0') {
    if (!existsSync(BIN)) throw new Error(`server binary not found at ${BIN}: run \`cargo build\` or set STOCKROOM_BIN`);
    starts += 1;
    this.starts = starts;
    const log = createWriteStream(join(ARTIFACTS, `server-${this.starts}.log`));
    const env = { ...process.env, STOCKROOM_API_KEYS: this.keys, RUST_LOG: process.env.RUST_LOG || 'info' };
    if (this.keys === null) delete env.STOCKROOM_API_KEYS;
    const child = spawn(BIN, ['--listen', listen, '--database-url', `sqlite://${this.dbPath}?mode=rwc`], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.process = child;
    child.stderr.pipe(log);
    const url = await new Promise((resolveUrl, reject) => {
      let buffer = '';
      const timer = setTimeout(() => reject(new Error(`server did not print "listening on" within 30 s:\n${buffer}`)), 30000);
      child.stdout.on('data', (chunk) => {
        log.write(chunk);
        buffer += chunk.toString();
        const match = buffer.match(/listening on (http:\/\/[^\s]+)/);
        if (match) {
          clearTimeout(timer);
          resolveUrl(match[1]);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`server exited early (code ${code}, signal ${signal}); see e2e/artifacts/server-${this.starts}.log`));
      });
    });
    this.url = url;
    return url;
  }

  async stop() {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(timer);
  }

  async restart() {
    const listen = new URL(this.url).host;
    await this.stop();
    let lastError;
    for (let attempt = 0; attempt < 20; attempt += 1) {
      try {
        return await this.start(listen);
      } catch (error) {
        lastError = error; // the port may still be held for a moment
        await sleep(250);
      }
    }
    throw lastError;
  }
}
