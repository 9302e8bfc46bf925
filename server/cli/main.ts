/** `ironboot` command line: the daemon (`serve`) and the clients of its API. */
import { loadServeConfig, ConfigError, SERVE_SETTINGS, envName } from '../config.ts';
import { createLogger } from '../log.ts';
import { SchemaTooNewError } from '../store/db.ts';
import { CliError } from './client.ts';
import { machinesCommand, imagesCommand, workflowsCommand, MACHINES_HELP, IMAGES_HELP, WORKFLOWS_HELP } from './commands.ts';
import { imagesBuildCommand } from './images-build.ts';
import { artifactsCommand } from './artifacts.ts';
import { labCommand } from '../lab/index.ts';
import { BootTemplateError } from '../boot/ipxe.ts';
import { ImageError } from '../images/index.ts';

const out = (s: string) => { process.stdout.write(s); };

function serveHelp(): string {
  const lines = SERVE_SETTINGS.map((s) => `  --${s.kind === 'bool' ? `[no-]${s.flag}` : `${s.flag} ${s.kind === 'int' ? 'N' : 'VALUE'}`}`.padEnd(34) + `${s.help}  [${envName(s.flag)}]`);
  return `ironboot serve [flags]    run the daemon: HTTP API, boot files, DHCP, TFTP\n\n  --config FILE`.padEnd(34) + 'JSON file with any of the keys below (camelCase)  [IRONBOOT_CONFIG]\n' + lines.join('\n') + '\n';
}

export const HELP = `ironboot — bare-metal provisioning: DHCP, PXE/TFTP, HTTP boot and container disks

usage: ironboot COMMAND [ARGS]

  serve                  run the daemon (see: ironboot serve --help)
  machines               register machines by MAC (add, set, list, show, rm)
  images                 container disks (build, list, show, rm)
  workflows              assign a container disk to a machine (create, list, show, cancel, retry, watch)
  artifacts build        build the kernel + initramfs machines boot
  artifacts ipxe         build iPXE with HTTPS that trusts your CA (--trust CA.pem)
  lab                    a private QEMU provisioning lab (up, vm, console, status, stop, exec, down)
  version

Clients take --server URL (IRONBOOT_SERVER, default http://127.0.0.1:8080), --token T (IRONBOOT_TOKEN, default: the
data directory's admin-token file) and --json.
`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case undefined: case 'help': case '--help': case '-h':
        out(HELP); return 0;
      case 'version': case '--version': {
        const { VERSION } = await import('../main.ts');
        out(`ironboot ${VERSION}\n`); return 0;
      }
      case 'serve': {
        if (rest.includes('--help') || rest.includes('-h')) { out(serveHelp()); return 0; }
        const config = loadServeConfig(rest);
        const log = createLogger(config.logLevel);
        const { serveUntilSignalled } = await import('../main.ts');
        await serveUntilSignalled(config, log);
        return 0;
      }
      case 'machines': case 'machine':
        await machinesCommand(rest, out); return 0;
      case 'images': case 'image':
        await imagesCommand(rest, out, { build: imagesBuildCommand }); return 0;
      case 'workflows': case 'workflow':
        return await workflowsCommand(rest, out);
      case 'artifacts':
        return await artifactsCommand(rest, out);
      case 'lab':
        return await labCommand(rest, out);
      default: {
        process.stderr.write(`ironboot: unknown command "${cmd}"\n\n${HELP}`);
        return 2;
      }
    }
  } catch (err) {
    if (err instanceof CliError || err instanceof ConfigError || err instanceof SchemaTooNewError || err instanceof BootTemplateError || err instanceof ImageError) {
      process.stderr.write(`ironboot: ${err.message}\n`);
      return err instanceof CliError ? err.exitCode : 1;
    }
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE' || (err as NodeJS.ErrnoException).code === 'EACCES') {
      process.stderr.write(`ironboot: ${(err as Error).message}\n`);
      return 1;
    }
    throw err;
  }
}

export { MACHINES_HELP, IMAGES_HELP, WORKFLOWS_HELP };
