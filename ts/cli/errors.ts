// How the CLI reports a failure. A mistake its user must fix (how the command was called, their
// files, directories or host) is one line and exit code 2: a stack trace would bury the one
// thing they need to read. Anything else is a bug or an accident and keeps its stack, exit 1.
import { NondeterminismError } from '../app/guard.js';
import { AppLoadError } from '../app/module.js';
import { MemberRefused } from '../pipeline/preexecutor-main.js';
import { RoleStartError, USER_ERROR_EXIT } from '../process.js';
import { CredentialError } from '../secret.js';

/** A mistake in how the command was called: an option, a command, a missing argument. */
export class UsageError extends Error {}

/** Something in the user's files, directories or host that they must fix (e.g. a cluster file). */
export class ConfigError extends Error {}

const INTERNAL_ERROR_EXIT = 1;

/** What follows a usage mistake: pointing at the usage is shorter than repeating it. */
const USAGE_HINT = "run 'remora help' for usage";

export interface Report {
  exitCode: number;
  /** What goes on stderr, newline-terminated. */
  text: string;
}

/** The stderr text and exit code for a command that failed with `e`. */
export function report(e: unknown): Report {
  const user = userError(e);
  if (user) {
    return { exitCode: USER_ERROR_EXIT, text: `remora: ${oneLine(user.message)}\n${user.usage ? `${USAGE_HINT}\n` : ''}` };
  }
  return { exitCode: INTERNAL_ERROR_EXIT, text: `remora: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n` };
}

interface UserError {
  message: string;
  /** Whether the usage text would help (a hint to it follows). */
  usage: boolean;
}

// parseArgs reports unknown or malformed options with these codes.
const PARSE_ARGS_CODES = new Set(['ERR_PARSE_ARGS_UNKNOWN_OPTION', 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE', 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL']);

// Failures of the host the user can act on: free the port, fix the permissions, make room.
// The native core reports them as `... (os error N)`, with their Linux numbers.
const ENVIRONMENT_CODES = new Set(['EACCES', 'EPERM', 'EADDRINUSE', 'EADDRNOTAVAIL', 'ENOSPC', 'EROFS', 'EDQUOT']);
const ENVIRONMENT_OS_ERRORS = new Set([1, 13, 28, 30, 98, 99, 122]);

/** Messages of the native core and wire that mean another process, no process or the wrong one is there. */
const KNOWN_MESSAGES: [RegExp, (m: RegExpExecArray) => string][] = [
  [
    /^log directory (.+) is locked by another open Log$/,
    (m) => `log directory ${m[1]} is locked by another running process: stop it, or use another cluster directory`,
  ],
  [/^store '(.+)' is owned by a live process$/, (m) => `store '${m[1]}' is owned by another running process: stop it, or use another cluster directory`],
  [/^wire: (cannot connect to .+)$/, (m) => `${m[1]} (is the node running?)`],
  [/^JetStream sequencer: (cannot connect to .+)$/, (m) => `the sequencer ${m[1]} (are the engine's servers running, and is the token right?)`],
  // The peer the user named refused their secret, or is not a Remora member at all.
  [/^handshake with .+ failed: .+$/, (m) => m[0]],
];

function userError(e: unknown, depth = 0): UserError | null {
  if (!(e instanceof Error) || depth > 4) return null;
  if (e instanceof UsageError) return { message: e.message, usage: true };
  const app = e instanceof AppLoadError || e instanceof NondeterminismError || e instanceof MemberRefused;
  if (e instanceof ConfigError || e instanceof CredentialError || app) {
    return { message: e.message, usage: false };
  }
  const { code, syscall, address, port } = e as Error & { code?: unknown; syscall?: unknown; address?: unknown; port?: unknown };
  if (typeof code === 'string' && PARSE_ARGS_CODES.has(code)) return { message: parseArgsMessage(e.message), usage: true };
  // A child that exited with the user-error code already said what to fix, in one line.
  if (e instanceof RoleStartError && e.reason !== null) return { message: `${e.role}: ${e.reason}`, usage: false };
  if (typeof code === 'string' && (ENVIRONMENT_CODES.has(code) || isBadDirectory(code, syscall) || isNobodyThere(code, syscall))) {
    const where = typeof address === 'string' ? (typeof port === 'number' ? `${address}:${port}` : address) : null;
    if (code === 'EADDRINUSE' && where !== null) return { message: `cannot listen on ${where}: address already in use`, usage: false };
    return { message: e.message, usage: false };
  }
  for (const [pattern, say] of KNOWN_MESSAGES) {
    const m = pattern.exec(e.message);
    if (m) return { message: say(m), usage: false };
  }
  const os = /\(os error (\d+)\)/.exec(e.message);
  if (os && ENVIRONMENT_OS_ERRORS.has(Number(os[1]))) return { message: e.message, usage: false };
  return userError(e.cause, depth + 1);
}

/** A cluster directory that is a file, or under one. */
const isBadDirectory = (code: string, syscall: unknown) => syscall === 'mkdir' && (code === 'EEXIST' || code === 'ENOTDIR');

/** Nothing serving at the address or socket the user named. */
const isNobodyThere = (code: string, syscall: unknown) => syscall === 'connect' && (code === 'ECONNREFUSED' || code === 'ENOENT');

/** parseArgs' first sentence, in the style of the CLI's own messages. */
function parseArgsMessage(message: string): string {
  const first = message.split('. ')[0] ?? message;
  return first.charAt(0).toLowerCase() + first.slice(1);
}

/** One line, whatever the message holds. */
const oneLine = (message: string) => message.replace(/\s*\n\s*/g, ' ').trim();
