// Pure logic of the extension (no `vscode` import), unit-tested with node's test runner.

import * as path from 'path';

/** The settings sent to `xtc-lsp` as `initializationOptions` (the server's `xtc` settings: README, "Editors"). */
export interface InitializationOptions {
    model: string;
    maxNewTokens: number;
    contextTokens: number;
    multiline: boolean;
    debounceMs: number;
    workspaceContext: boolean;
    contextExclude: string[];
}

/** Keys of the `xtc` section that go to the server; `enable` and `serverCommand` stay here. */
export const SERVER_KEYS = [
    'model', 'maxNewTokens', 'contextTokens', 'multiline', 'debounceMs', 'workspaceContext', 'contextExclude',
] as const;

/** Defaults, identical to `contributes.configuration` in package.json. */
export const DEFAULTS: InitializationOptions = {
    model: '',
    maxNewTokens: 48,
    contextTokens: 1024,
    multiline: false,
    debounceMs: 0,
    workspaceContext: true,
    contextExclude: [],
};

/**
 * Languages (VS Code language ids) completed by default: `xtc.languages`, identical to
 * `contributes.configuration` in package.json and to `LANGUAGES` in xtc/core/defaults.py.
 */
export const DEFAULT_LANGUAGES: readonly string[] = [
    'python', 'javascript', 'typescript', 'javascriptreact', 'typescriptreact', 'go', 'rust', 'java', 'kotlin',
    'swift', 'c', 'cpp', 'csharp', 'ruby', 'php', 'lua', 'perl', 'r', 'shellscript', 'powershell', 'sql', 'html',
    'css', 'scss', 'json', 'jsonc', 'yaml', 'toml', 'markdown', 'dockerfile', 'makefile',
];

/** The URI schemes of documents the server completes: files on disk and new, unsaved files. */
export const SCHEMES = ['file', 'untitled'] as const;

/** What we need of a `vscode.WorkspaceConfiguration` for the `xtc` section. */
export interface ConfigReader {
    get<T>(key: string): T | undefined;
}

function intIn(value: unknown, fallback: number, low: number, high: number): number {
    if (typeof value !== 'number' || !Number.isFinite(value)) {
        return fallback;
    }
    return Math.min(high, Math.max(low, Math.round(value)));
}

/** The `initializationOptions` for the server, from the `xtc` configuration section. */
export function buildInitializationOptions(config: ConfigReader): InitializationOptions {
    const model = config.get<unknown>('model');
    const multiline = config.get<unknown>('multiline');
    const workspaceContext = config.get<unknown>('workspaceContext');
    const exclude = config.get<unknown>('contextExclude');
    return {
        model: typeof model === 'string' ? model.trim() : DEFAULTS.model,
        maxNewTokens: intIn(config.get('maxNewTokens'), DEFAULTS.maxNewTokens, 1, 512),
        contextTokens: intIn(config.get('contextTokens'), DEFAULTS.contextTokens, 16, 32768),
        multiline: typeof multiline === 'boolean' ? multiline : DEFAULTS.multiline,
        debounceMs: intIn(config.get('debounceMs'), DEFAULTS.debounceMs, 0, 5000),
        workspaceContext: typeof workspaceContext === 'boolean' ? workspaceContext : DEFAULTS.workspaceContext,
        contextExclude: Array.isArray(exclude)
            ? exclude.filter((x): x is string => typeof x === 'string' && x.trim() !== '').map((x) => x.trim())
            : [...DEFAULTS.contextExclude],
    };
}

/**
 * The language ids of `xtc.languages`: trimmed, non-empty, each once, in the given order. A value
 * that is not an array of strings gives the defaults; an empty array, no language at all; `*`,
 * every language.
 */
export function languagesOf(config: ConfigReader): string[] {
    const value = config.get<unknown>('languages');
    if (!Array.isArray(value)) {
        return [...DEFAULT_LANGUAGES];
    }
    const ids = value.filter((v): v is string => typeof v === 'string').map((v) => v.trim()).filter((v) => v !== '');
    return [...new Set(ids)];
}

/** A document filter, as vscode-languageclient's `documentSelector` takes it. */
export interface DocumentFilter {
    scheme: string;
    language?: string;
}

/** The client's document selector for these languages (`*`: every language), files and unsaved files. */
export function documentSelector(languages: readonly string[]): DocumentFilter[] {
    if (languages.includes('*')) {
        return SCHEMES.map((scheme) => ({ scheme }));
    }
    return languages.flatMap((language) => SCHEMES.map((scheme) => ({ scheme, language })));
}

export interface ServerCommand {
    command: string;
    args: string[];
    /** Where the command came from, for the log; `missing`: no `xtc-lsp` found (see INSTALL_HINT). */
    source: 'setting' | 'workspace' | 'path' | 'pipx' | 'missing';
    /** Working directory for the server: the first workspace folder, if any. */
    cwd?: string;
}

export interface ResolveContext {
    /** File-system paths of the open workspace folders, first = primary. */
    workspaceFolders: string[];
    exists: (file: string) => boolean;
    platform?: NodeJS.Platform;
    home?: string;
    /** The extension host's environment (`PATH`, `PIPX_BIN_DIR`); none = nothing searched there. */
    env?: Record<string, string | undefined>;
}

/** What to tell a user who has no `xtc-lsp` (the package's name is pyproject.toml's `project.name`). */
export const INSTALL_HINT =
    'xtc: xtc-lsp not found; install it with `pipx install codegpt-xtc` (or `pip install codegpt-xtc`), or set xtc.serverCommand';

/** Expand `${workspaceFolder}`, `${userHome}` and a leading `~` in one argument. */
export function expandVariables(arg: string, ctx: ResolveContext): string {
    const folder = ctx.workspaceFolders[0];
    let out = arg;
    if (folder !== undefined) {
        out = out.split('${workspaceFolder}').join(folder);
    }
    if (ctx.home) {
        out = out.split('${userHome}').join(ctx.home);
        if (out === '~' || out.startsWith('~/')) {
            out = ctx.home + out.slice(1);
        }
    }
    return out;
}

/** The executable of `xtc-lsp` inside a virtual environment at `venv`. */
export function venvServer(venv: string, platform: NodeJS.Platform = process.platform): string {
    return platform === 'win32'
        ? path.win32.join(venv, 'Scripts', 'xtc-lsp.exe')
        : path.posix.join(venv, 'bin', 'xtc-lsp');
}

/** Whether `file` is `dir` or inside it. */
function inside(file: string, dir: string, p: typeof path.posix): boolean {
    const rel = p.relative(dir, file);
    return rel === '' || (!rel.startsWith('..') && !p.isAbsolute(rel));
}

/**
 * The command that starts the server, first found of: `xtc.serverCommand` (machine-scoped: only
 * the user sets it) when it names a program, a relative program path (containing a slash) taken
 * relative to the first workspace folder; the first workspace folder whose `.venv/bin/xtc-lsp`
 * exists; `xtc-lsp` in a directory of PATH; in `$PIPX_BIN_DIR`; in pipx's default `~/.local/bin`
 * (an editor started from a desktop menu often lacks it on PATH). None found: source `missing`.
 * In an untrusted workspace (`trusted` false) no program inside the workspace is started: not its
 * `.venv`, nor a setting or PATH entry that points into it (opening a downloaded repository must
 * not run its code). Relative PATH entries are skipped (they would resolve against the workspace).
 */
export function resolveServerCommand(configured: unknown, ctx: ResolveContext, trusted: boolean): ServerCommand {
    const platform = ctx.platform ?? process.platform;
    const p = platform === 'win32' ? path.win32 : path.posix;
    const cwd = ctx.workspaceFolders[0];
    const raw = Array.isArray(configured) ? configured.filter((a): a is string => typeof a === 'string') : [];
    const parts = raw.map((a) => expandVariables(a, ctx));
    if (parts.length > 0 && parts[0].trim() !== '') {
        const [program, ...args] = parts;
        let command = program;
        const relative = cwd !== undefined && !p.isAbsolute(command) && /[\\/]/.test(command);
        if (relative) {
            command = p.join(cwd, command);
        }
        if (trusted || !(relative || raw[0].includes('${workspaceFolder}'))) {
            return { command, args, source: 'setting', cwd };
        }
    } else if (trusted) {
        for (const folder of ctx.workspaceFolders) {
            const candidate = venvServer(path.join(folder, '.venv'), platform);
            if (ctx.exists(candidate)) {
                return { command: candidate, args: [], source: 'workspace', cwd: folder };
            }
        }
    }
    const exe = platform === 'win32' ? 'xtc-lsp.exe' : 'xtc-lsp';
    const env = ctx.env ?? {};
    const allowed = (dir: string) => p.isAbsolute(dir)
        && (trusted || !ctx.workspaceFolders.some((folder) => inside(dir, folder, p)));
    const searched: Array<[string, ServerCommand['source']]> = [
        ...(env.PATH ?? env.Path ?? '').split(platform === 'win32' ? ';' : ':').map((d): [string, 'path'] => [d, 'path']),
        [env.PIPX_BIN_DIR ?? '', 'pipx'],
        [ctx.home ? p.join(ctx.home, '.local', 'bin') : '', 'pipx'],
    ];
    for (const [dir, source] of searched) {
        if (dir !== '' && allowed(dir) && ctx.exists(p.join(dir, exe))) {
            return { command: p.join(dir, exe), args: [], source, cwd };
        }
    }
    return { command: 'xtc-lsp', args: [], source: 'missing', cwd };
}

/** A short name for the configured model, for the status bar. */
export function modelLabel(model: string): string {
    const m = model.trim();
    if (m === '') {
        return 'default model';
    }
    const base = m.replace(/[\\/]+$/, '').split(/[\\/]/).pop();
    return base || m;
}

/** The server's notification of a model load's state (sent at its start and at its end). */
export const STATUS_NOTIFICATION = 'xtc/status';

/** A model load's state: `superseded` means a newer load replaced it before it finished. */
export type LoadState = 'loading' | 'ready' | 'error' | 'superseded';

/** Params of `xtc/status`: `load` numbers the server's loads (1, 2, ...), `model` is the
 * configured SRC ("" = the default) or the loaded model's name, `message` is for people. */
export interface LoadStatus {
    state: LoadState;
    load: number;
    model: string;
    message?: string;
}

/**
 * The status bar's state from the server's `xtc/status` notifications, by state and load number
 * only (never by the wording of a message): a load's end counts only if no newer load has
 * started, and `superseded` changes nothing (the newer load reports for itself). One tracker per
 * server process: the numbering restarts with the server.
 */
export class LoadTracker {
    private latest = 0;

    update(params: LoadStatus): { status: 'loading' | 'ready' | 'error'; model: string; detail?: string } | undefined {
        if (typeof params !== 'object' || params === null || typeof params.load !== 'number' || params.load < this.latest) {
            return undefined;
        }
        const model = typeof params.model === 'string' ? params.model : '';
        const detail = typeof params.message === 'string' ? params.message : undefined;
        switch (params.state) {
            case 'loading':
                this.latest = params.load;
                return { status: 'loading', model, detail };
            case 'ready':
            case 'error':
                this.latest = params.load;
                return { status: params.state, model, detail };
            default: // 'superseded' and states this client does not know
                return undefined;
        }
    }
}

export type Status = 'disabled' | 'starting' | 'loading' | 'ready' | 'error' | 'stopped';

export interface StatusView {
    text: string;
    tooltip: string;
    error: boolean;
}

/** Status bar text and tooltip for a state. */
export function statusView(status: Status, model: string, detail?: string): StatusView {
    const name = modelLabel(model);
    const more = detail ? `\n${detail}` : '';
    switch (status) {
        case 'disabled':
            return { text: '$(circle-slash) xtc', tooltip: 'xtc completions are disabled (command: xtc: Enable completions)', error: false };
        case 'starting':
            return { text: '$(sync~spin) xtc', tooltip: `xtc: starting the language server${more}`, error: false };
        case 'loading':
            return { text: `$(sync~spin) xtc: ${name}`, tooltip: `xtc: loading ${name}${more}`, error: false };
        case 'ready':
            return { text: `$(check) xtc: ${name}`, tooltip: `xtc: ${name} ready${more}`, error: false };
        case 'error':
            return { text: `$(error) xtc: ${name}`, tooltip: `xtc: error${more}\nClick to show the log.`, error: true };
        case 'stopped':
            return { text: '$(debug-disconnect) xtc', tooltip: `xtc: the language server is not running${more}\nClick to show the log.`, error: true };
    }
}

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

/** The level of a line the server wrote on stderr ("xtc-lsp INFO model ready"); other lines
 * (tracebacks, library warnings) are errors. */
export function parseServerLogLine(line: string): { level: LogLevel; message: string } {
    const match = /^xtc-lsp (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$/.exec(line);
    if (!match) {
        return { level: 'error', message: line };
    }
    const level: LogLevel = match[1] === 'DEBUG' ? 'debug' : match[1] === 'INFO' ? 'info' : match[1] === 'WARNING' ? 'warn' : 'error';
    return { level, message: `server: ${match[2]}` };
}
