// What every bench script shares: timing a shell pipeline under /usr/bin/time, with our Node
// process's peak RSS read from the file test/infra/report-rss.js writes.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

/** One timed run of a pipeline. */
export interface Run {
  /** Wall seconds. */
  seconds: number;
  /** user + sys CPU of the pipeline's processes (not the PostgreSQL server or RGW). */
  cpuSeconds: number;
  /** Peak RSS of our Node process, KiB (ours only). */
  rssKiB?: number;
  /** Peak bytes of files under the work dir while it ran (bench.ts's drills only). */
  diskBytes?: number;
  stdout: string;
}

/**
 * Runs `command` with `bash -o pipefail -c` under /usr/bin/time in `cwd` with `env`. With
 * `rssFile`, that file is emptied first and its largest line (KiB, written by
 * test/infra/report-rss.js in our process) is the run's peak RSS.
 * @throws Error naming `label`, the exit code and the end of stderr when the pipeline fails.
 */
export function timePipeline(label: string, command: string, o: { env: NodeJS.ProcessEnv; cwd: string; rssFile?: string }): Promise<Run> {
  if (o.rssFile) writeFileSync(o.rssFile, '');
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn('/usr/bin/time', ['-f', 'CPU_S=%U+%S', 'bash', '-o', 'pipefail', '-c', command], { env: o.env, cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) return reject(new Error(`${label} failed (${code}): ${stderr.slice(-800)}`));
      const cpu = /CPU_S=([\d.]+)\+([\d.]+)/.exec(stderr);
      const rss = o.rssFile ? Math.max(0, ...readFileSync(o.rssFile, 'utf8').split('\n').filter(Boolean).map(Number)) : undefined;
      resolve({ seconds, cpuSeconds: cpu ? Number(cpu[1]) + Number(cpu[2]) : NaN, rssKiB: rss, stdout });
    });
  });
}
