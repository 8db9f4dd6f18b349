// Unit tests of the extension's own logic; no VS Code needed (`npm test`, node's test runner).

import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
    buildInitializationOptions,
    ConfigReader,
    DEFAULT_LANGUAGES,
    DEFAULTS,
    documentSelector,
    expandVariables,
    INSTALL_HINT,
    languagesOf,
    LoadTracker,
    modelLabel,
    parseServerLogLine,
    resolveServerCommand,
    SERVER_KEYS,
    STATUS_NOTIFICATION,
    statusView,
} from '../settings';

function reader(values: Record<string, unknown>): ConfigReader {
    return { get: <T>(key: string) => values[key] as T | undefined };
}

const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
const properties: Record<string, { type: string; default: unknown }> = manifest.contributes.configuration.properties;

describe('package.json', () => {
    it('contributes exactly the settings the README documents', () => {
        assert.deepEqual(Object.keys(properties).sort(), [
            'xtc.contextExclude', 'xtc.contextTokens', 'xtc.debounceMs', 'xtc.enable', 'xtc.languages',
            'xtc.maxNewTokens', 'xtc.model', 'xtc.multiline', 'xtc.serverCommand', 'xtc.workspaceContext',
        ]);
        assert.equal(properties['xtc.enable'].type, 'boolean');
        assert.equal(properties['xtc.serverCommand'].type, 'array');
        assert.deepEqual(properties['xtc.serverCommand'].default, []);
        assert.equal(properties['xtc.model'].default, '');
        assert.equal(properties['xtc.languages'].type, 'array');
        assert.deepEqual(properties['xtc.languages'].default, DEFAULT_LANGUAGES);
    });

    it('lets only the user, never a workspace, choose the server program', () => {
        // a workspace-level xtc.serverCommand would run a program of the opened folder
        assert.equal((properties['xtc.serverCommand'] as { scope?: string }).scope, 'machine');
    });

    it('declares limited support for untrusted workspaces', () => {
        const untrusted = manifest.capabilities?.untrustedWorkspaces;
        assert.equal(untrusted?.supported, 'limited');
        assert.equal(typeof untrusted?.description, 'string');
        assert.ok(untrusted.description.trim() !== '');
    });

    it('declares the same defaults as the code', () => {
        for (const key of SERVER_KEYS) {
            assert.deepEqual(properties[`xtc.${key}`].default, DEFAULTS[key], key);
        }
    });

    it('declares every command it registers and activates on every default language', () => {
        const commands = manifest.contributes.commands.map((c: { command: string }) => c.command).sort();
        assert.deepEqual(commands, ['xtc.disable', 'xtc.enable', 'xtc.restartServer', 'xtc.showLog', 'xtc.toggle']);
        for (const language of DEFAULT_LANGUAGES) {
            assert.ok(manifest.activationEvents.includes(`onLanguage:${language}`), language);
        }
        // languages a user adds to xtc.languages work too, without opening a default one first
        assert.ok(manifest.activationEvents.includes('onStartupFinished'));
        const lock = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package-lock.json'), 'utf8'));
        const version: string = lock.packages['node_modules/vscode-languageclient'].version;
        const [major, minor, patch] = version.split('.').map(Number);
        assert.ok(major > 10 || (major === 10 && (minor > 0 || patch >= 1)), `vscode-languageclient ${version} < 10.0.1`);
    });
});

describe('buildInitializationOptions', () => {
    it('uses the defaults for an empty configuration', () => {
        assert.deepEqual(buildInitializationOptions(reader({})), DEFAULTS);
    });

    it('passes the server keys and nothing else', () => {
        const options = buildInitializationOptions(reader({
            enable: true, serverCommand: ['x'], model: ' /models/tiny ', maxNewTokens: 16, contextTokens: 256,
            multiline: true, debounceMs: 75, workspaceContext: false, contextExclude: [' *.csv ', '', 3],
        }));
        assert.deepEqual(options, {
            model: '/models/tiny', maxNewTokens: 16, contextTokens: 256, multiline: true, debounceMs: 75,
            workspaceContext: false, contextExclude: ['*.csv'],
        });
        assert.deepEqual(Object.keys(options).sort(), [...SERVER_KEYS].sort());
    });

    it('clamps numbers and ignores values of the wrong type', () => {
        const options = buildInitializationOptions(reader({
            model: 42, maxNewTokens: 100000, contextTokens: 1, multiline: 'yes', debounceMs: 12.6,
            workspaceContext: 'no', contextExclude: '.env',
        }));
        assert.deepEqual(options, {
            model: '', maxNewTokens: 512, contextTokens: 16, multiline: false, debounceMs: 13,
            workspaceContext: true, contextExclude: [],
        });
        assert.equal(buildInitializationOptions(reader({ maxNewTokens: Number.NaN })).maxNewTokens, DEFAULTS.maxNewTokens);
    });
});

describe('languages', () => {
    it('completes common languages by default, Python and JavaScript among them', () => {
        assert.deepEqual(languagesOf(reader({})), DEFAULT_LANGUAGES);
        for (const language of ['python', 'javascript', 'typescript', 'go', 'rust', 'java', 'c', 'cpp', 'shellscript']) {
            assert.ok(DEFAULT_LANGUAGES.includes(language), language);
        }
        assert.equal(new Set(DEFAULT_LANGUAGES).size, DEFAULT_LANGUAGES.length);
    });

    it('takes the setting, trimmed and without repeats; malformed values give the defaults', () => {
        assert.deepEqual(languagesOf(reader({ languages: [' rust ', 'go', 'rust', '', 7] })), ['rust', 'go']);
        assert.deepEqual(languagesOf(reader({ languages: [] })), []);
        assert.deepEqual(languagesOf(reader({ languages: 'python' })), DEFAULT_LANGUAGES);
    });

    it('selects files and unsaved documents of those languages, or of every language with *', () => {
        assert.deepEqual(documentSelector(['python', 'javascript']), [
            { scheme: 'file', language: 'python' }, { scheme: 'untitled', language: 'python' },
            { scheme: 'file', language: 'javascript' }, { scheme: 'untitled', language: 'javascript' },
        ]);
        assert.deepEqual(documentSelector(['python', '*']), [{ scheme: 'file' }, { scheme: 'untitled' }]);
        assert.deepEqual(documentSelector([]), []);
    });

    it('is not sent to the server', () => {
        assert.ok(!(SERVER_KEYS as readonly string[]).includes('languages'));
        assert.ok(!('languages' in buildInitializationOptions(reader({ languages: ['go'] }))));
    });
});

describe('resolveServerCommand', () => {
    const none = () => false;

    it('says it found no server when none is installed', () => {
        const env = { PATH: '/usr/bin:/bin', PIPX_BIN_DIR: '/opt/pipx' };
        assert.deepEqual(resolveServerCommand([], { workspaceFolders: [], exists: none, platform: 'linux', home: '/h', env }, true),
            { command: 'xtc-lsp', args: [], source: 'missing', cwd: undefined });
        assert.equal(resolveServerCommand(undefined, { workspaceFolders: ['/w'], exists: none, platform: 'linux' }, true).source, 'missing');
    });

    it('names the package to install in one line', () => {
        const project = fs.readFileSync(path.join(__dirname, '..', '..', '..', 'pyproject.toml'), 'utf8')
            .match(/^\[project\][^[]*?^name\s*=\s*"([^"]+)"/m)?.[1];
        assert.ok(project);
        assert.ok(INSTALL_HINT.includes(`pipx install ${project}`));
        assert.ok(INSTALL_HINT.includes(`pip install ${project}`));
        assert.ok(!INSTALL_HINT.includes('\n'));
    });

    describe('finds an installed xtc-lsp', () => {
        const home = '/home/u';
        const env = { PATH: '/usr/local/bin:/usr/bin', PIPX_BIN_DIR: '/opt/pipx/bin' };
        const find = (present: string[], trusted = true, e: Record<string, string | undefined> = env, configured: unknown = []) =>
            resolveServerCommand(configured, { workspaceFolders: ['/w'], exists: (f) => present.includes(f), platform: 'linux', home, env: e }, trusted);
        const all = ['/w/.venv/bin/xtc-lsp', '/usr/bin/xtc-lsp', '/opt/pipx/bin/xtc-lsp', '/home/u/.local/bin/xtc-lsp'];

        it('in the order setting, workspace .venv, PATH, $PIPX_BIN_DIR, ~/.local/bin', () => {
            assert.equal(find(all, true, env, ['/opt/mine/xtc-lsp']).command, '/opt/mine/xtc-lsp');
            for (let i = 0; i < all.length; i++) {
                const got = find(all.slice(i));
                assert.equal(got.command, all[i]);
                assert.equal(got.source, ['workspace', 'path', 'pipx', 'pipx'][i]);
            }
        });

        it('in the first PATH directory that holds it', () => {
            assert.equal(find(['/usr/local/bin/xtc-lsp', '/usr/bin/xtc-lsp']).command, '/usr/local/bin/xtc-lsp');
        });

        it("in pipx's default location without $PIPX_BIN_DIR", () => {
            assert.deepEqual(find(['/home/u/.local/bin/xtc-lsp'], true, { PATH: '/usr/bin' }),
                { command: '/home/u/.local/bin/xtc-lsp', args: [], source: 'pipx', cwd: '/w' });
        });

        it('never in a relative PATH entry, nor in one inside an untrusted workspace', () => {
            const e = { PATH: ':.:bin:/w/.venv/bin:/usr/bin' };
            assert.equal(find(['bin/xtc-lsp', 'xtc-lsp', './xtc-lsp', '/w/.venv/bin/xtc-lsp', '/usr/bin/xtc-lsp'], false, e).command, '/usr/bin/xtc-lsp');
            assert.equal(find(['/w/.venv/bin/xtc-lsp'], false, e).source, 'missing');
            assert.equal(find(['/w/.venv/bin/xtc-lsp'], true, e).command, '/w/.venv/bin/xtc-lsp');
        });

        it('with the Windows names on Windows', () => {
            const got = resolveServerCommand([], { workspaceFolders: [], platform: 'win32', home: 'C:\\Users\\u', env: { Path: 'C:\\py;C:\\tools' },
                exists: (f) => f === 'C:\\tools\\xtc-lsp.exe' }, true);
            assert.deepEqual(got, { command: 'C:\\tools\\xtc-lsp.exe', args: [], source: 'path', cwd: undefined });
        });
    });

    it('prefers the workspace virtual environment in a trusted workspace', () => {
        const present = new Set(['/b/.venv/bin/xtc-lsp']);
        const got = resolveServerCommand([], { workspaceFolders: ['/a', '/b'], exists: (f) => present.has(f), platform: 'linux' }, true);
        assert.deepEqual(got, { command: '/b/.venv/bin/xtc-lsp', args: [], source: 'workspace', cwd: '/b' });
    });

    it('never starts a program of an untrusted workspace', () => {
        const ctx = { workspaceFolders: ['/w'], exists: () => true, platform: 'linux' as const, home: '/home/u', env: { PATH: '/usr/bin' } };
        assert.deepEqual(resolveServerCommand([], ctx, false), { command: '/usr/bin/xtc-lsp', args: [], source: 'path', cwd: '/w' });
        // a user setting that points into the workspace is not run there either
        assert.equal(resolveServerCommand(['env/bin/xtc-lsp'], ctx, false).command, '/usr/bin/xtc-lsp');
        assert.equal(resolveServerCommand(['${workspaceFolder}/.venv/bin/xtc-lsp'], ctx, false).command, '/usr/bin/xtc-lsp');
        // a user setting outside the workspace is honoured
        assert.deepEqual(resolveServerCommand(['/opt/py/bin/xtc-lsp', '--log-level', 'DEBUG'], ctx, false),
            { command: '/opt/py/bin/xtc-lsp', args: ['--log-level', 'DEBUG'], source: 'setting', cwd: '/w' });
        assert.equal(resolveServerCommand(['~/bin/xtc-lsp'], ctx, false).command, '/home/u/bin/xtc-lsp');
        assert.equal(resolveServerCommand(['xtc-lsp', '--stdio'], ctx, false).source, 'setting');
    });

    it('uses the Windows layout of a virtual environment on Windows', () => {
        const seen: string[] = [];
        resolveServerCommand([], { workspaceFolders: ['C:\\w'], exists: (f) => { seen.push(f); return false; }, platform: 'win32' }, true);
        assert.equal(seen[0].replace(/\\/g, '/'), 'C:/w/.venv/Scripts/xtc-lsp.exe');
    });

    it('takes the setting first, with its arguments', () => {
        const got = resolveServerCommand(['/opt/py/bin/python', '-m', 'lsp_server', '--log-level', 'DEBUG'],
            { workspaceFolders: ['/w'], exists: () => true, platform: 'linux' }, true);
        assert.deepEqual(got, { command: '/opt/py/bin/python', args: ['-m', 'lsp_server', '--log-level', 'DEBUG'], source: 'setting', cwd: '/w' });
    });

    it('resolves a relative program path against the workspace, but not a bare name', () => {
        const ctx = { workspaceFolders: ['/w'], exists: none, platform: 'linux' as const };
        assert.equal(resolveServerCommand(['env/bin/xtc-lsp'], ctx, true).command, '/w/env/bin/xtc-lsp');
        assert.equal(resolveServerCommand(['xtc-lsp', '--stdio'], ctx, true).command, 'xtc-lsp');
    });

    it('expands variables and ignores an empty or malformed setting', () => {
        const ctx = { workspaceFolders: ['/w'], exists: none, platform: 'linux' as const, home: '/home/u' };
        assert.deepEqual(resolveServerCommand(['${workspaceFolder}/.venv/bin/xtc-lsp', '~/x', '${userHome}/y'], ctx, true),
            { command: '/w/.venv/bin/xtc-lsp', args: ['/home/u/x', '/home/u/y'], source: 'setting', cwd: '/w' });
        assert.equal(resolveServerCommand([''], ctx, true).source, 'missing');
        assert.equal(resolveServerCommand('xtc-lsp --tcp', ctx, true).source, 'missing');
        assert.equal(resolveServerCommand([1, 2], ctx, true).source, 'missing');
        assert.equal(expandVariables('~user/x', ctx), '~user/x');
    });
});

describe('status bar', () => {
    it('names the model', () => {
        assert.equal(modelLabel(''), 'default model');
        assert.equal(modelLabel('/models/tiny-gpt2/'), 'tiny-gpt2');
        assert.equal(modelLabel('microsoft/CodeGPT-small-py'), 'CodeGPT-small-py');
        assert.equal(modelLabel('smollm2'), 'smollm2');
    });

    it('follows the structured load state, never the text of a message', () => {
        assert.equal(STATUS_NOTIFICATION, 'xtc/status');
        const loads = new LoadTracker();
        assert.deepEqual(loads.update({ state: 'loading', load: 1, model: 'tiny', message: 'loading model tiny' }),
            { status: 'loading', model: 'tiny', detail: 'loading model tiny' });
        assert.deepEqual(loads.update({ state: 'ready', load: 1, model: 'tiny', message: 'model tiny ready' }),
            { status: 'ready', model: 'tiny', detail: 'model tiny ready' });
        // a message that reads like an error does not make an error; the state does
        assert.equal(new LoadTracker().update({ state: 'ready', load: 1, model: 'x', message: 'cannot load: no error' })?.status, 'ready');
        const error = new LoadTracker().update({ state: 'error', load: 1, model: '/x', message: 'cannot load model /x: no config.json' });
        assert.deepEqual(error, { status: 'error', model: '/x', detail: 'cannot load model /x: no config.json' });
    });

    it('ends on the last model after two quick model changes', () => {
        const loads = new LoadTracker();
        loads.update({ state: 'loading', load: 1, model: 'a' });
        loads.update({ state: 'loading', load: 2, model: 'b' });
        assert.equal(loads.update({ state: 'superseded', load: 1, model: 'a', message: 'model load superseded by a newer one' }), undefined);
        assert.deepEqual(loads.update({ state: 'ready', load: 2, model: 'b' }), { status: 'ready', model: 'b', detail: undefined });
        // an older load that reports late (even a failure) does not overwrite the newer state
        assert.equal(loads.update({ state: 'error', load: 1, model: 'a', message: 'cannot load model a' }), undefined);
        assert.equal(loads.update({ state: 'loading', load: 1, model: 'a' }), undefined);
        // a newer load takes over; unknown states and malformed notifications are ignored
        assert.equal(loads.update({ state: 'loading', load: 3, model: 'c' })?.status, 'loading');
        assert.equal(loads.update({ state: 'exploded', load: 3, model: 'c' } as never), undefined);
        assert.equal(loads.update(undefined as never), undefined);
    });

    it('shows loading, ready and error', () => {
        assert.match(statusView('loading', 'tiny').text, /loading|sync~spin/);
        assert.equal(statusView('ready', '/m/tiny').text, '$(check) xtc: tiny');
        const error = statusView('error', '', 'no model installed');
        assert.ok(error.error);
        assert.match(error.tooltip, /no model installed/);
        assert.ok(!statusView('disabled', '').error);
    });
});

describe('server log lines', () => {
    it('keeps the level the server gave', () => {
        assert.deepEqual(parseServerLogLine('xtc-lsp INFO model tiny ready'), { level: 'info', message: 'server: model tiny ready' });
        assert.equal(parseServerLogLine('xtc-lsp DEBUG inline: 3 new').level, 'debug');
        assert.equal(parseServerLogLine('xtc-lsp WARNING ignoring setting').level, 'warn');
        assert.equal(parseServerLogLine('xtc-lsp ERROR cannot load').level, 'error');
    });

    it('treats anything else on stderr as an error', () => {
        assert.deepEqual(parseServerLogLine('Traceback (most recent call last):'),
            { level: 'error', message: 'Traceback (most recent call last):' });
    });
});
