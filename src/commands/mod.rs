//! One module per subcommand: each turns parsed arguments into work and an exit code.

pub(crate) mod demo;
pub(crate) mod export;
pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod runs;
pub(crate) mod sandbox;
pub(crate) mod validate;

use crate::cli::{Cli, Command};
use crate::exit_code::ExitCode;

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => validate::run(&cli.global, &args),
        Command::Plan(args) => plan::run(&cli.global, &args),
        Command::Run(args) => run::run(&cli.global, &args),
        Command::Status(args) => runs::status(&cli.global, &args),
        Command::Report(args) => runs::report(&cli.global, &args),
        Command::Revert(args) => runs::revert(&cli.global, &args),
        Command::Export(args) => export::run(&cli.global, &args),
        Command::Demo(args) => demo::run(&cli.global, &args),
        Command::Sandbox(args) => sandbox::run(&args),
        Command::Completions(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut command, "simbatch", &mut std::io::stdout());
            Ok(ExitCode::Success)
        }
        Command::Manpage => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            Ok(ExitCode::Success)
        }
    }
}
