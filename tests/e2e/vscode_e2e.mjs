#!/usr/bin/env node
// End-to-end test of the VS Code extension in a real VS Code (code-server 4.100.3, web build),
// driven by Debian's Chromium through playwright-core. Everything stays on 127.0.0.1.
//
//   node tests/e2e/vscode_e2e.mjs --vsix X.vsix --server '["/abs/.venv/bin/xtc-lsp"]' --model DIR \
//        [--cache ~/.cache/xtc-e2e] [--artifacts artifacts/e2e] [--timeout 120] [--expect-error]
//
// Installs the .vsix into a fresh code-server (fresh user-data and extensions dirs), opens a
// Python file of a temporary workspace, types, waits for ghost text served by xtc-lsp, screenshots
// it, presses Tab, saves, and checks that the file on disk now holds the suggestion; then the same
// in a JavaScript file (completed through the default `xtc.languages`).
// With --expect-error (a model that cannot load), checks instead that the error pops up and the
// status bar item shows it.
// Prints one JSON line with the result; exit 0 on success.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
    options: {
        vsix: { type: 'string' },
        server: { type: 'string' },
        model: { type: 'string', default: '' },
        cache: { type: 'string', default: process.env.XTC_E2E_CACHE || path.join(os.homedir(), '.cache', 'xtc-e2e') },
        artifacts: { type: 'string', default: 'artifacts/e2e' },
        chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
        timeout: { type: 'string', default: '120' },
        typed: { type: 'string', default: 'def split(self, text):\n' },
        'typed-js': { type: 'string', default: 'function split(text) {\n' },
        screenshot: { type: 'string', default: '' },
        keep: { type: 'boolean', default: false },
        'expect-error': { type: 'boolean', default: false }, // the model cannot load: expect the error shown
    },
});
for (const required of ['vsix', 'server']) {
    if (!opt[required]) {
        console.error(`vscode_e2e: --${required} is required`);
        process.exit(2);
    }
}

const t0 = Date.now();
const elapsed = () => ((Date.now() - t0) / 1000).toFixed(1);
const log = (msg) => console.error(`[vscode-e2e ${elapsed()}s] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const timeoutMs = Number(opt.timeout) * 1000;

const codeServer = path.join(opt.cache, 'code-server', 'node_modules', '.bin', 'code-server');
const require = createRequire(path.join(opt.cache, 'playwright', 'package.json'));
const { chromium } = require('playwright-core');

const artifacts = path.resolve(opt.artifacts);
fs.mkdirSync(artifacts, { recursive: true });
for (const stale of ['vscode-failure.png', 'vscode-no-ghost-text.png', 'statusbar.html', 'xtc-output.log']) {
    fs.rmSync(path.join(artifacts, stale), { force: true });
}
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'xtc-vscode-e2e-'));
const workspace = path.join(root, 'workspace');
const userData = path.join(root, 'user-data');
const extensions = path.join(root, 'extensions');
for (const dir of [workspace, path.join(userData, 'User'), extensions]) {
    fs.mkdirSync(dir, { recursive: true });
}

// The files we complete in: some context, then a line we type. The tiny model has seen Python;
// in JavaScript its suggestions are junk, but they must show as ghost text all the same.
const FILE = 'sample.py';
const CONTEXT = [
    '"""Small helpers."""',
    '',
    'import os',
    '',
    '',
    'def join(parts, sep):',
    '    """Join parts with sep."""',
    '    result = []',
    '    for part in parts:',
    '        result.append(part)',
    '    return sep.join(result)',
    '',
    '',
    '',
].join('\n');
const JS_FILE = 'sample.js';
const JS_CONTEXT = [
    '// Small helpers.',
    '',
    "const path = require('path');",
    '',
    'function join(parts, sep) {',
    '    const result = [];',
    '    for (const part of parts) {',
    '        result.push(part);',
    '    }',
    '    return result.join(sep);',
    '}',
    '',
    '',
].join('\n');
fs.writeFileSync(path.join(workspace, FILE), CONTEXT);
fs.writeFileSync(path.join(workspace, JS_FILE), JS_CONTEXT);

const settings = {
    'security.workspace.trust.enabled': false,
    'workbench.startupEditor': 'none',
    'workbench.tips.enabled': false,
    'workbench.enableExperiments': false,
    'telemetry.telemetryLevel': 'off',
    'update.mode': 'none',
    'extensions.autoCheckUpdates': false,
    'extensions.autoUpdate': false,
    'extensions.ignoreRecommendations': true,
    'files.autoSave': 'off',
    'editor.inlineSuggest.enabled': true,
    // Keep the suggest widget out of the way, so that Tab means "accept the ghost text".
    'editor.quickSuggestions': { other: 'off', comments: 'off', strings: 'off' },
    'editor.suggestOnTriggerCharacters': false,
    'editor.wordBasedSuggestions': 'off',
    'editor.autoClosingBrackets': 'never',
    'editor.autoClosingQuotes': 'never',
    'xtc.model': opt.model,
    'xtc.maxNewTokens': 16,
    'xtc.trace.server': 'messages', // the LSP traffic goes to the xtc log, kept as an artefact
};
fs.writeFileSync(path.join(userData, 'User', 'settings.json'), JSON.stringify(settings, null, 2));
// xtc.serverCommand is machine-scoped. code-server is a remote window: such settings are read from
// the server side's settings (Remote settings, <user-data-dir>/Machine/settings.json), and ones in
// User settings are dropped once the extension's schema is known (after the first settings write).
fs.mkdirSync(path.join(userData, 'Machine'), { recursive: true });
fs.writeFileSync(path.join(userData, 'Machine', 'settings.json'),
    JSON.stringify({ 'xtc.serverCommand': JSON.parse(opt.server) }, null, 2));

function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

let server; // code-server, leader of its own process group
let browser;
let page;
const result = { ok: false, steps: {} };

/** Keep the extension's output channel (server stderr and LSP trace) as an artefact. */
function copyLogs(dir) {
    if (!fs.existsSync(dir)) {
        return;
    }
    for (const entry of fs.readdirSync(dir, { recursive: true })) {
        if (/(^|\/)xtc\.log$/.test(String(entry).replace(/\\/g, '/'))) {
            fs.copyFileSync(path.join(dir, entry), path.join(artifacts, 'xtc-output.log'));
        }
    }
}

async function cleanup() {
    if (browser) {
        await browser.close().catch(() => {});
    }
    if (server && server.exitCode === null) {
        try {
            process.kill(-server.pid, 'SIGTERM'); // the whole group: extension host and xtc-lsp too
            await sleep(500);
            process.kill(-server.pid, 'SIGKILL');
        } catch {
            // already gone
        }
    }
    copyLogs(path.join(userData, 'logs'));
    if (!opt.keep) {
        fs.rmSync(root, { recursive: true, force: true });
    }
}

/** Open a file of the workspace with Ctrl+P; the cursor goes to its end. */
async function openFile(name) {
    // A busy machine sometimes drops the Enter of the quick-open list: one more try, then fail.
    for (let attempt = 1; ; attempt++) {
        await page.keyboard.press('Control+P');
        await page.waitForSelector('.quick-input-widget input', { state: 'visible' });
        await page.keyboard.type(name);
        await page.waitForSelector(`.quick-input-list .monaco-list-row[aria-label*="${name}"]`, { timeout: 30000 });
        await page.keyboard.press('Enter');
        try {
            await page.waitForSelector(`.tab.active[aria-label*="${name}"]`, { timeout: 30000 });
            break;
        } catch (error) {
            if (attempt >= 2) throw error;
            log(`${name}: not open after Enter, trying again`);
            await page.keyboard.press('Escape');
        }
    }
    await page.waitForSelector('.monaco-editor .view-lines', { timeout: 30000 });
    await page.click('.monaco-editor .view-lines');
    await page.keyboard.press('Control+End');
    log(`${name} open`);
}

/**
 * In the open file `name` (on disk: `context`): type `typedText` one key at a time, wait for ghost
 * text (retyping to retrigger until the model is loaded), screenshot it, press Tab, save, and
 * check that the file on disk holds the suggestion. Returns { typed, ghost, saved }.
 */
async function completeIn(name, context, typedText, statusItem, screenshot) {
    const ghost = page.locator('.monaco-editor span.ghost-text-decoration, .monaco-editor [class*="ghost-text"]');
    let typed = '';
    let ghostText = '';
    const deadline = Date.now() + timeoutMs;
    const ghostVisible = async (ms) => {
        try {
            await ghost.first().waitFor({ state: 'visible', timeout: ms });
            const texts = await ghost.allTextContents();
            return texts.join('').replace(/\u00a0/g, ' ');
        } catch {
            return '';
        }
    };
    // While typing, each key cancels the previous request; once everything is typed, wait (a slow
    // model may need seconds per suggestion), then retrigger with an edit that leaves the text as it
    // was (a space, then Backspace), waiting longer each time. ("Trigger Inline Suggestion", Alt+\,
    // does not reach the editor in the web build.)
    let wait = 5000;
    while (!ghostText && Date.now() < deadline) {
        if (typed.length < typedText.length) {
            const ch = typedText[typed.length];
            await page.keyboard.press(ch === '\n' ? 'Enter' : ch === ' ' ? 'Space' : ch);
            typed += ch;
            ghostText = await ghostVisible(typed.length === typedText.length ? wait : 400);
        } else {
            await page.keyboard.press('Space');
            await page.keyboard.press('Backspace');
            wait = Math.min(2 * wait, 20000);
            ghostText = await ghostVisible(Math.max(1000, Math.min(wait, deadline - Date.now())));
        }
    }
    result.status = (await statusItem.getAttribute('aria-label').catch(() => null)) || (await statusItem.textContent());
    if (!ghostText.trim()) {
        await page.screenshot({ path: path.join(artifacts, 'vscode-no-ghost-text.png') });
        throw new Error(`${name}: no ghost text within ${opt.timeout}s (typed ${JSON.stringify(typed)}); status: ${result.status}`);
    }
    log(`${name}: ghost text after typing ${JSON.stringify(typed)}: ${JSON.stringify(ghostText)}`);
    await page.screenshot({ path: path.join(artifacts, screenshot) });

    // Tab accepts it; save and read the file back.
    await page.keyboard.press('Tab');
    await sleep(300);
    await page.keyboard.press('Control+S');
    const file = path.join(workspace, name);
    const firstGhostLine = ghostText.split('\n')[0].trim();
    let saved = '';
    for (let i = 0; i < 40; i++) {
        saved = fs.readFileSync(file, 'utf8');
        if (saved !== context && saved.includes(firstGhostLine)) {
            break;
        }
        await sleep(250);
    }
    await page.screenshot({ path: path.join(artifacts, screenshot.replace('ghost-text', 'accepted')) });
    if (!saved.startsWith(context) || !saved.slice(context.length).includes(firstGhostLine)) {
        throw new Error(`${name}: after Tab the file does not hold the suggestion ${JSON.stringify(firstGhostLine)}: ` +
            JSON.stringify(saved.slice(context.length)));
    }
    log(`${name}: accepted; file now ends ${JSON.stringify(saved.slice(context.length))}`);
    return { typed, ghost: ghostText, saved: saved.slice(context.length) };
}

async function main() {
    // 1. Install the extension into the fresh extensions dir.
    const install = spawnSync(codeServer, ['--user-data-dir', userData, '--extensions-dir', extensions,
        '--install-extension', path.resolve(opt.vsix)], { encoding: 'utf8', timeout: 60000 });
    if (install.status !== 0) {
        throw new Error(`--install-extension failed: ${install.stdout}${install.stderr}`);
    }
    result.steps.installed = elapsed();
    log(`installed ${path.basename(opt.vsix)}`);

    // 2. Start code-server on 127.0.0.1 in its own process group (setsid).
    const port = await freePort();
    const config = path.join(root, 'config.yaml');
    fs.writeFileSync(config, `bind-addr: 127.0.0.1:${port}\nauth: none\ncert: false\n`);
    const serverLog = fs.openSync(path.join(artifacts, 'code-server.log'), 'w');
    server = spawn(codeServer, ['--config', config, '--disable-telemetry', '--disable-update-check',
        '--disable-workspace-trust', '--disable-getting-started-override', '--log', 'trace', '--user-data-dir', userData,
        '--extensions-dir', extensions, workspace], {
        detached: true, stdio: ['ignore', serverLog, serverLog],
        env: { ...process.env, XTC_LSP_LOG: 'DEBUG' },
    });
    const url = `http://127.0.0.1:${port}/?folder=${encodeURIComponent(workspace)}`;
    for (let i = 0; ; i++) {
        const up = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
        if (up) {
            break;
        }
        if (server.exitCode !== null || i > 120) {
            throw new Error('code-server did not start (see code-server.log)');
        }
        await sleep(250);
    }
    result.steps.serverUp = elapsed();
    log(`code-server on port ${port}`);

    // 3. Chromium, offline apart from 127.0.0.1.
    browser = await chromium.launch({
        executablePath: opt.chromium,
        args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
            '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    const foreign = [];
    page.on('request', (req) => {
        const u = new URL(req.url());
        if (/^(https?|wss?):$/.test(u.protocol) && u.hostname !== '127.0.0.1') {
            foreign.push(req.url());
        }
    });
    await page.goto(url);
    await page.waitForSelector('.monaco-workbench', { timeout: 60000 });
    result.steps.workbench = elapsed();
    log('workbench loaded');

    // 4. Open the file with Ctrl+P (wait for its row before Enter: pressing early was a flake).
    await sleep(1000);
    await openFile(FILE);
    result.steps.opened = elapsed();

    // The status bar item reaches "ready" once the server has loaded the model.
    const statusItem = page.locator('[id$=".xtc.status"]');
    await statusItem.waitFor({ timeout: 30000 });

    if (opt['expect-error']) {
        // A model that cannot load: the server says so once (window/showMessage); the extension
        // pops it up with a "Show Log" button and turns its status bar item into an error.
        const toast = page.locator('.notifications-toasts .notification-list-item', { hasText: 'xtc:' });
        await toast.first().waitFor({ timeout: timeoutMs });
        result.notification = (await toast.first().textContent()).trim();
        await page.waitForFunction(() => {
            const item = document.querySelector('[id$=".xtc.status"]');
            return item && /error/.test(item.getAttribute('aria-label') || item.textContent || '');
        }, null, { timeout: 10000 });
        result.status = await statusItem.getAttribute('aria-label');
        result.steps.error = elapsed();
        log(`error shown: ${result.notification}`);
        await page.screenshot({ path: path.join(artifacts, 'vscode-model-error.png') });
        result.foreignRequests = foreign;
        result.ok = foreign.length === 0;
        return;
    }

    // 5. Type; wait for ghost text; 6. Tab accepts it (Python, then JavaScript).
    const py = await completeIn(FILE, CONTEXT, opt.typed, statusItem, 'vscode-ghost-text.png');
    Object.assign(result, { typed: py.typed, ghost: py.ghost, saved: py.saved });
    result.steps.accepted = elapsed();
    if (opt.screenshot) {
        fs.copyFileSync(path.join(artifacts, 'vscode-ghost-text.png'), opt.screenshot);
    }
    await openFile(JS_FILE);
    result.js = await completeIn(JS_FILE, JS_CONTEXT, opt['typed-js'], statusItem, 'vscode-ghost-text-js.png');
    result.steps.acceptedJs = elapsed();

    // 7. The commands, from the command palette: disable stops the server, enable starts it again.
    const runCommand = async (title) => {
        await page.keyboard.press('F1');
        await page.waitForSelector('.quick-input-widget input', { state: 'visible' });
        await page.keyboard.type(title);
        await page.waitForSelector(`.quick-input-list .monaco-list-row[aria-label*="${title}"]`, { timeout: 15000 });
        await page.keyboard.press('Enter');
    };
    const statusMatches = (re, ms) => page.waitForFunction((source) => {
        const item = document.querySelector('[id$=".xtc.status"]');
        return item && new RegExp(source).test(item.getAttribute('aria-label') || '');
    }, re.source, { timeout: ms });
    await runCommand('xtc: Disable completions');
    await statusMatches(/disabled/, 15000);
    result.steps.disabled = elapsed();
    await runCommand('xtc: Enable completions');
    await statusMatches(/ready/, 60000);
    result.steps.reenabled = elapsed();
    log('disabled and enabled again from the command palette');

    result.foreignRequests = foreign;
    if (foreign.length) {
        throw new Error(`requests left 127.0.0.1: ${foreign.slice(0, 5).join(' ')}`);
    }
    result.ok = true;
}

try {
    await main();
} catch (err) {
    result.error = String(err && err.stack ? err.stack : err);
    if (page) {
        await page.screenshot({ path: path.join(artifacts, 'vscode-failure.png') }).catch(() => {});
        const bar = await page.locator('.statusbar').innerHTML().catch(() => '');
        fs.writeFileSync(path.join(artifacts, 'statusbar.html'), bar);
    }
    log(`FAILED: ${err && err.message ? err.message : err}`);
} finally {
    result.seconds = Number(elapsed());
    await cleanup();
    fs.writeFileSync(path.join(artifacts, 'vscode-e2e.json'), JSON.stringify(result, null, 2));
    console.log(JSON.stringify({ ok: result.ok, seconds: result.seconds, ghost: result.ghost, error: result.error }));
}
process.exit(result.ok ? 0 : 1);
