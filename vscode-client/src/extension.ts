// xtc for VS Code: starts `xtc-lsp` over stdio for the languages of `xtc.languages`; VS Code shows
// its inline completions as ghost text (vscode-languageclient >= 10.0.1 has inline completion built in).

import * as fs from 'fs';
import * as os from 'os';
import * as readline from 'readline';
import * as vscode from 'vscode';
import {
    LanguageClient,
    LanguageClientOptions,
    MessageType,
    ServerOptions,
    ShowMessageNotification,
    State,
} from 'vscode-languageclient/node';
import {
    buildInitializationOptions,
    documentSelector,
    INSTALL_HINT,
    languagesOf,
    LoadStatus,
    LoadTracker,
    parseServerLogLine,
    resolveServerCommand,
    Status,
    STATUS_NOTIFICATION,
    statusView,
} from './settings';

const SECTION = 'xtc';

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel;
let statusItem: vscode.StatusBarItem;
let status: Status = 'starting';
let statusModel = '';
let statusDetail: string | undefined;
let stopping = false;
let queue: Promise<void> = Promise.resolve();

function config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration(SECTION);
}

function setStatus(next: Status, detail?: string, model?: string): void {
    status = next;
    statusDetail = detail;
    statusModel = model ?? (config().get<string>('model') ?? '');
    const view = statusView(status, statusModel, statusDetail);
    statusItem.text = view.text;
    statusItem.tooltip = view.tooltip;
    statusItem.backgroundColor = view.error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
    statusItem.show();
}

/** Serialise start/stop/restart so that quick toggles never run two servers. */
function enqueue(task: () => Promise<void>): Promise<void> {
    queue = queue.then(task, task).catch((err) => output.error(`xtc: ${String(err)}`));
    return queue;
}

function workspaceFolders(): string[] {
    return (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file').map((f) => f.uri.fsPath);
}

async function startClient(): Promise<void> {
    if (!config().get<boolean>('enable', true)) {
        setStatus('disabled');
        return;
    }
    const server = resolveServerCommand(config().get('serverCommand'), {
        workspaceFolders: workspaceFolders(),
        exists: (file) => {
            try {
                fs.accessSync(file, fs.constants.X_OK);
                return true;
            } catch {
                return false;
            }
        },
        home: os.homedir(),
        env: process.env,
    }, vscode.workspace.isTrusted);
    if (!vscode.workspace.isTrusted) {
        output.info('workspace not trusted: no program inside it is started (trusting it restarts the server)');
    }
    if (server.source === 'missing') {
        output.error(INSTALL_HINT);
        setStatus('error', INSTALL_HINT);
        void vscode.window.showErrorMessage(INSTALL_HINT);
        return;
    }
    output.info(`starting ${[server.command, ...server.args].join(' ')} (from ${server.source}) ` +
        `for ${languagesOf(config()).join(', ') || 'no language (xtc.languages is empty)'}`);
    const serverOptions: ServerOptions = { command: server.command, args: server.args, options: { cwd: server.cwd } };
    const clientOptions: LanguageClientOptions = {
        // `xtc.languages`; a change restarts the client with the new selector.
        documentSelector: documentSelector(languagesOf(config())),
        // A function, so that a restart sends the settings of that moment.
        initializationOptions: () => buildInitializationOptions(config()),
        // Sends `workspace/didChangeConfiguration` with the `xtc` section on every change.
        synchronize: { configurationSection: SECTION },
        outputChannel: output,
        // The server logs "xtc-lsp LEVEL message" lines on stderr: keep their level.
        stdioOptions: {
            stdout: (input, channel) => readline.createInterface({ input, crlfDelay: Infinity }).on('line', (line) => channel.info(line)),
            stderr: (input, channel) => readline.createInterface({ input, crlfDelay: Infinity }).on('line', (line) => {
                const { level, message } = parseServerLogLine(line);
                channel[level](message);
            }),
        },
        middleware: {
            // VS Code shows the suggestion as ghost text (textDocument/inlineCompletion); the same
            // suggestion as a completion item (for clients without inline completion) would only
            // duplicate it in the suggest widget and make the server generate twice.
            provideCompletionItem: () => undefined,
            provideInlineCompletionItems: async (document, position, context, token, next) => {
                const started = Date.now();
                const result = await next(document, position, context, token);
                const items = Array.isArray(result) ? result : result?.items ?? [];
                output.debug(`inline completion at ${position.line + 1}:${position.character + 1} ` +
                    `(${context.triggerKind === vscode.InlineCompletionTriggerKind.Invoke ? 'invoked' : 'automatic'}): ` +
                    `${items.length} item(s), ${Date.now() - started} ms${token.isCancellationRequested ? ', cancelled' : ''}`);
                return result;
            },
        },
    };
    const c = new LanguageClient('xtc', 'xtc', serverOptions, clientOptions);
    c.onDidChangeState((e) => {
        if (e.newState === State.Starting) {
            setStatus('starting');
        } else if (e.newState === State.Running) {
            setStatus('loading'); // the server loads its model in the background after `initialize`
        } else if (e.newState === State.Stopped && !stopping) {
            setStatus('stopped');
        }
    });
    // The model's load state, as the server reports it: `loading`, `ready`, `error`, `superseded`.
    const loads = new LoadTracker();
    c.onNotification(STATUS_NOTIFICATION, (params: LoadStatus) => {
        const next = loads.update(params);
        if (next !== undefined && status !== 'disabled' && status !== 'stopped') {
            setStatus(next.status, next.detail, next.model);
        }
    });
    // Replaces the client's default handler: the same pop-up, plus a button to the log (the server
    // pops up a missing or broken model this way; the status bar follows `xtc/status`).
    c.onNotification(ShowMessageNotification.type, async (message) => {
        output.appendLine(message.message);
        if (message.type === MessageType.Error) {
            const choice = await vscode.window.showErrorMessage(message.message, 'Show Log');
            if (choice) {
                output.show(true);
            }
        } else if (message.type === MessageType.Warning) {
            void vscode.window.showWarningMessage(message.message);
        } else {
            void vscode.window.showInformationMessage(message.message);
        }
    });
    client = c;
    try {
        await c.start();
    } catch (err) {
        const message = `cannot start ${server.command}: ${err instanceof Error ? err.message : String(err)}`;
        output.error(message);
        setStatus('error', `${message}\n${INSTALL_HINT}`);
    }
}

async function stopClient(): Promise<void> {
    const c = client;
    client = undefined;
    if (!c) {
        return;
    }
    stopping = true;
    try {
        if (c.isRunning()) {
            await c.stop(5000);
        }
        await c.dispose();
    } catch (err) {
        output.warn(`stopping the server: ${String(err)}`);
    } finally {
        stopping = false;
    }
}

async function setEnabled(enabled: boolean): Promise<void> {
    const inspect = config().inspect<boolean>('enable');
    const target = inspect?.workspaceFolderValue !== undefined
        ? vscode.ConfigurationTarget.WorkspaceFolder
        : inspect?.workspaceValue !== undefined
            ? vscode.ConfigurationTarget.Workspace
            : vscode.ConfigurationTarget.Global;
    await config().update('enable', enabled, target); // the change listener starts or stops the server
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
    output = vscode.window.createOutputChannel('xtc', { log: true });
    statusItem = vscode.window.createStatusBarItem('xtc.status', vscode.StatusBarAlignment.Right, 100);
    statusItem.name = 'xtc';
    statusItem.command = 'xtc.showLog';
    context.subscriptions.push(
        output,
        statusItem,
        vscode.commands.registerCommand('xtc.enable', () => setEnabled(true)),
        vscode.commands.registerCommand('xtc.disable', () => setEnabled(false)),
        vscode.commands.registerCommand('xtc.toggle', () => setEnabled(!config().get<boolean>('enable', true))),
        vscode.commands.registerCommand('xtc.restartServer', () => enqueue(async () => {
            await stopClient();
            await startClient();
        })),
        vscode.commands.registerCommand('xtc.showLog', () => output.show(true)),
        // An untrusted workspace got xtc-lsp from PATH; once trusted, its .venv may serve instead.
        vscode.workspace.onDidGrantWorkspaceTrust(() => enqueue(async () => {
            await stopClient();
            await startClient();
        })),
        vscode.workspace.onDidChangeConfiguration((e) => {
            if (e.affectsConfiguration('xtc.enable') || e.affectsConfiguration('xtc.serverCommand')
                || e.affectsConfiguration('xtc.languages')) {
                void enqueue(async () => {
                    await stopClient();
                    await startClient();
                });
            } else if (e.affectsConfiguration('xtc.model') && client?.isRunning()) {
                setStatus('loading'); // the server reloads; its progress report confirms
            }
        }),
    );
    setStatus('starting');
    await enqueue(startClient);
}

export async function deactivate(): Promise<void> {
    await stopClient();
}
