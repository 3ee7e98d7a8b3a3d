// A tmpfs of 2 MiB pages for a store's regions, as docs/native-core.md advises a deployment to
// mount its cluster directory: random reads of 10⁷ objects then miss the TLB far less often.
// Mounting takes privileges (root, or CAP_SYS_ADMIN); without them there is none, and the
// caller says so in its settings and uses /dev/shm.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export interface HugeTmpfs {
  readonly dir: string;
  /** Unmounts it (what is in it goes) and removes the mount point. */
  close(): void;
}

/** Mounts a `huge=always` tmpfs of at most `sizeGiB` under `parent`; null when this process may not. */
export function mountHugeTmpfs(parent: string, sizeGiB: number): HugeTmpfs | null {
  const dir = mkdtempSync(join(parent, 'remora-bench-huge-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `huge=always,size=${sizeGiB}g,mode=0700`, 'remora-bench-huge', dir], { stdio: 'ignore' });
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return null;
  }
  let open = true;
  const close = () => {
    if (!open) return;
    open = false;
    try {
      execFileSync('umount', [dir], { stdio: 'ignore' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  // A kernel that ignores `huge=` would leave 4 KiB pages behind a mount that claims otherwise.
  const mounted = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[1] === dir && line.includes('huge=always'));
  if (!mounted) {
    close();
    return null;
  }
  return { dir, close };
}
