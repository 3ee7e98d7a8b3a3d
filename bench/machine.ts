// What a benchmark ran on, recorded next to its numbers: results from different machines (or
// a loaded one) are only comparable when this travels with them.
import { readFileSync } from 'node:fs';
import os from 'node:os';

export interface Machine {
  cpu_model: string;
  /** Logical CPUs the OS reports. */
  cores: number;
  /** CPUs this process may run on (cgroup / affinity limits), what parallel work can use. */
  available_parallelism: number;
  /** 0 when the platform (e.g. some VMs) does not report it. */
  cpu_mhz: number;
  memory_bytes: number;
  memory_gib: number;
  os: string;
  platform: string;
  arch: string;
  kernel: string;
  kernel_version: string;
  node_version: string;
  v8_version: string;
  /** 1, 5 and 15 minute load averages when the run began: a busy machine explains noise. */
  load_average: number[];
}

/** The distribution's own name where it says it (Linux), else the kernel's. */
function osName(): string {
  try {
    const release = readFileSync('/etc/os-release', 'utf8');
    const pretty = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(release)?.[1];
    if (pretty) return pretty;
  } catch {
    // Not Linux, or no os-release: fall through.
  }
  return `${os.type()} ${os.release()}`;
}

export function describeMachine(): Machine {
  const cpus = os.cpus();
  const memory = os.totalmem();
  return {
    cpu_model: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    available_parallelism: os.availableParallelism(),
    cpu_mhz: cpus[0]?.speed ?? 0,
    memory_bytes: memory,
    memory_gib: Math.round((memory / 2 ** 30) * 10) / 10,
    os: osName(),
    platform: process.platform,
    arch: process.arch,
    kernel: os.release(),
    kernel_version: os.version(),
    node_version: process.version,
    v8_version: process.versions.v8,
    load_average: os.loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

/** One line for humans. */
export function summariseMachine(m: Machine): string {
  return `${m.cpu_model}, ${m.cores} cores, ${m.memory_gib} GiB, ${m.os} (kernel ${m.kernel}), ` + `node ${m.node_version}, load ${m.load_average.join(' ')}`;
}
