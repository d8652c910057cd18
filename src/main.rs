//! The `simbatch` binary: parse arguments, set up logging, run the command, map the result to
//! an exit code (SPEC 5). Everything else lives in the library.

use clap::Parser;
use simbatch::cli::Cli;
use simbatch::exit_code::ExitCode;

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.global.verbose, cli.global.quiet);
    match simbatch::commands::dispatch(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            // One line, with the whole cause chain: what an operator needs to act on.
            eprintln!("simbatch: error: {err:#}");
            ExitCode::for_error(&err).into()
        }
    }
}

/// `-v` adds simbatch's own events (`-vv` more, `-vvv` all); other crates' (sled, hyper…)
/// only through `RUST_LOG`. Written past the progress bars; colour only on a terminal.
fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,simbatch=info",
        (false, 2) => "warn,simbatch=debug",
        _ => "warn,simbatch=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(simbatch::progress::ConsoleWriter)
        .init();
}

/// glibc gives each thread that allocates its own arena, and every arena keeps freed memory:
/// with tokio's workers, its blocking pool and sled's threads, a 200,000-row run peaked at
/// 127 MB RSS for 77 MB of heap. One arena: 82 MB, at the same speed (measured; see
/// benches/README.md). Called before any other thread starts.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator settings; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
            // A fixed threshold: glibc otherwise raises it each time a large block is freed,
            // and the inventory pages read alongside dispatch then came out of the heap and
            // fragmented it (100,000 rows: 96 → 89 MB).
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        }
        // glibc keeps freed memory inside its heap; over a long run that slack grew with the
        // row count although the live heap did not (heaptrack: the same 73.6 MB peak at 100,000
        // and 400,000 rows). Handing it back every quarter second keeps RSS near the live heap
        // (once a second let the listing's garbage pile up while dispatch ran: 89 → ~78 MB).
        std::thread::spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_millis(250));
            // SAFETY: malloc_trim is thread-safe and only releases unused memory.
            unsafe {
                libc::malloc_trim(0);
            }
        });
    }
}
