//! The command line, defined in one place. Exit codes: 0 ok, 1 a `fail` rule or a pipeline
//! error, 2 bad usage or configuration.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Pipeline;
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::run::Stage;

#[derive(Parser, Debug)]
#[command(
    name = "elevflyt",
    version,
    about = "Raw school-system exports → FINT-based, versioned (SCD2) Delta Lake tables",
    long_about = "elevflyt reads the exports of school administration systems (OneRoster JSON, CSV or REST \
from Vigilo and others, the FINT API, the legacy Vigo semicolon elevliste), standardizes them to the FINT model (elev, \
elevforhold, skole), validates them (deviations go to `avvik`), keeps their history as SCD type 2 \
in Delta Lake, and writes the county's list of 10th graders (`elevliste_vgs`).\n\n\
Exit codes: 0 ok, 1 a `fail` rule or a pipeline error, 2 bad usage or configuration."
)]
pub struct Cli {
    /// Log format on stderr: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run all three stages: ingest, standardize, publish.
    ///
    /// Once every ten commits of a table, the run also compacts its small files (the summary's
    /// `compacted`; `compact_after_run = false` in `[pipeline]` turns it off). Vacuum is left to
    /// `maintain`.
    Run(StageArgs),
    /// Read new files from each source into raw_<source>.
    Ingest(StageArgs),
    /// Standardize and validate snapshots not yet published (writes avvik and the staging tables).
    Standardize(StageArgs),
    /// Merge standardized snapshots into the SCD2 tables and rewrite elevliste_vgs.
    Publish(StageArgs),
    /// Query the tables with SQL (DataFusion dialect). Every table of the pipeline is registered
    /// under its name: elev, elevforhold, skole, avvik, kvalitet, kjoring, elevliste_vgs, raw_<source>.
    Sql(SqlArgs),
    /// Delta versions of a table: time, operation, run id and operation metrics (newest first).
    History(TableArgs),
    /// Rows inserted, updated and deleted between two versions (Change Data Feed).
    Changes(ChangesArgs),
    /// Check the SCD2 invariants over the stored tables; exit 1 when one is broken.
    Check(PipelineArgs),
    /// Compact small files (optimize), remove files no longer needed (vacuum) and checkpoint.
    ///
    /// A raw table's file markers and an SCD2 table's current rows stay in files of their own
    /// (what a run reads), and the next run still uses its state file: the commits change no
    /// data.
    Maintain(MaintainArgs),
    /// The operator report: pupils per class, invalid fødselsnummer, when data was last loaded,
    /// open deviations per school, the last runs (and why one failed) and quality over time.
    Report(ReportArgs),
    /// Write synthetic exports (Tenor numbers, invented names) at any scale, deterministic by seed.
    Generate(GenerateArgs),
    /// Check a pipeline file without touching storage: keys, kommunenummer, formats, globs, rule
    /// settings, and that each location is a path or URL elevflyt can open. Exit 2 when it is
    /// not valid.
    Validate(PipelineArgs),
    /// List the quality rules with their default severity and what they check.
    Rules,
    /// Serve the tables a sharing file names over the Delta Sharing protocol (for the county's
    /// admission office): per-recipient tokens, row restrictions, signed file URLs, transfer
    /// windows; every read is logged in `utlevering`. Runs until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Manage the recipients' access in a sharing file: mint a token (profile file), revoke one.
    #[command(subcommand)]
    Share(ShareCommand),
    /// Write the county list as files for a county still on files (logged in `utlevering`).
    #[command(subcommand)]
    Export(ExportCommand),
    /// Print the table reference (Markdown) generated from the schema definitions.
    #[command(hide = true)]
    SchemaDocs,
}

#[derive(Args, Debug)]
pub struct StageArgs {
    /// The pipeline file (TOML), e.g. pipelines/bergen.toml. Several run one after another in
    /// one process, each on its own (a fleet: `elevflyt run national/pipelines/*.toml`); the exit
    /// code is then 1 when any of them failed.
    #[arg(required = true, num_args = 1..)]
    pub pipeline: Vec<PathBuf>,
    /// Warehouse root to use instead of the pipeline file's (path or URL).
    #[arg(long)]
    pub warehouse: Option<String>,
    /// As-of (snapshot) time for every file read in this run: 2026-01-15 or 2026-01-15T08:00:00Z.
    #[arg(long)]
    pub as_of: Option<String>,
    /// Write nothing: read and check the inputs and report what would be ingested. Stages after
    /// ingest only see data that an earlier run has ingested.
    #[arg(long)]
    pub dry_run: bool,
    /// Publish a delivery that would end most current rows of its scope (or empty the county
    /// list) — rule `masseendring`, which otherwise stops the run before any table changes.
    /// Use it once, when the change is known to be right (a school closed, a new school year).
    #[arg(long)]
    pub accept_mass_change: bool,
    /// Ingest only files dated (in their names) on or before this date or time; later files
    /// wait for a later run. Loads a backlog one day at a time: 2026-01-15.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Kommunenummer (several, comma-separated, spread the schools over them), or `alle` for
    /// every kommune in the 2024 list (a national set). Default 4601; with --national, `alle`.
    #[arg(long)]
    pub kommune: Option<String>,
    /// Number of pupils in the first snapshot.
    #[arg(long, default_value_t = 1000)]
    pub pupils: u64,
    /// Number of snapshots.
    #[arg(long, default_value_t = 1)]
    pub snapshots: u32,
    /// Share of pupils changed between snapshots (moves, name changes, leavers, newcomers,
    /// D-number → fødselsnummer).
    #[arg(long, default_value_t = 0.01)]
    pub churn: f64,
    /// Input format to write, by name (the formats are listed below).
    #[arg(long, default_value = "oneroster-json")]
    pub format: String,
    /// Seed: the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Date of the first snapshot.
    #[arg(long, default_value = "2026-01-15")]
    pub start: String,
    /// Days between snapshots.
    #[arg(long, default_value_t = 1)]
    pub interval_days: i64,
    /// Folder to write into.
    #[arg(long)]
    pub out: PathBuf,
    /// One export per kommune (every kommune in the 2024 list, or those of --kommune), each in
    /// `<out>/<kommunenummer>/`, with a pipeline file per kommune in `<out>/pipelines/` that
    /// writes to one warehouse, `<out>/lager`: the country as a fleet of pipelines.
    #[arg(long)]
    pub national: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The sharing file (TOML), e.g. pipelines/sharing-vestland.toml.
    pub sharing: PathBuf,
    /// Address to listen on instead of the file's `[server] listen` (port 0: any free port).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Fix the server's clock at this time (RFC 3339), for tests and rehearsals of a transfer
    /// window only: the windows open and close by it, file URLs expire by it.
    #[arg(long)]
    pub now: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ShareCommand {
    /// Mint a bearer token for a recipient: writes its profile file (shareCredentialsVersion 1)
    /// and prints the token once. The sharing file keeps only the token's SHA-256; a running
    /// server picks it up at once.
    Token(ShareTokenArgs),
    /// Revoke a recipient's token (or all of them); a running server refuses it at once.
    Revoke(ShareRevokeArgs),
    /// Add an operator of the web pages (or change one), scoped to kommuner and optionally
    /// schools. The password is read from standard input (at least 12 characters) and stored
    /// as an argon2id hash.
    User(ShareUserArgs),
}

#[derive(Args, Debug)]
pub struct ShareUserArgs {
    /// The sharing file (TOML).
    pub sharing: PathBuf,
    /// The operator's user name.
    #[arg(long)]
    pub name: String,
    /// Kommunenummer the operator sees (repeat for several).
    #[arg(long, required = true)]
    pub kommune: Vec<String>,
    /// Only these schools (skolenummer; repeat for several).
    #[arg(long)]
    pub skule: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ShareTokenArgs {
    /// The sharing file (TOML).
    pub sharing: PathBuf,
    /// The recipient (`[[recipient]] name`).
    #[arg(long)]
    pub recipient: String,
    /// Days until the token expires.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Where to write the profile file (give it to the recipient, by a secure channel).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ShareRevokeArgs {
    /// The sharing file (TOML).
    pub sharing: PathBuf,
    #[arg(long)]
    pub recipient: String,
    /// The token's id (in the sharing file); without it, every token of the recipient.
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// The legacy Vigo elevliste: `kommunenummer;skolenummer;fylkesnummer;klasse;fødselsnummer;
    /// elev_namn`, one file per school, `elevliste_<skolenummer>_<yyyymmdd>.csv`.
    Vigo(ExportVigoArgs),
}

#[derive(Args, Debug)]
pub struct ExportVigoArgs {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Warehouse root to use instead of the pipeline file's.
    #[arg(long)]
    pub warehouse: Option<String>,
    /// The county (fylkesnummer) whose pupils are exported.
    #[arg(long)]
    pub fylke: String,
    /// Only this school (skolenummer).
    #[arg(long)]
    pub skule: Option<String>,
    /// The folder to write the files in.
    #[arg(long)]
    pub out: PathBuf,
    /// windows-1252 as the legacy file, or utf-8.
    #[arg(long, value_enum, default_value_t = ExportEncoding::Windows1252)]
    pub encoding: ExportEncoding,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportEncoding {
    #[value(name = "windows-1252")]
    Windows1252,
    #[value(name = "utf-8")]
    Utf8,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Warehouse root to use instead of the pipeline file's.
    #[arg(long)]
    pub warehouse: Option<String>,
    /// text for a terminal, json for machines, html for one self-contained page with charts.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Html,
}

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Warehouse root to use instead of the pipeline file's.
    #[arg(long)]
    pub warehouse: Option<String>,
}

#[derive(Args, Debug)]
pub struct TableArgs {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Table name, e.g. elev.
    pub table: String,
    /// Warehouse root to use instead of the pipeline file's.
    #[arg(long)]
    pub warehouse: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Args, Debug)]
pub struct ChangesArgs {
    #[command(flatten)]
    pub table: TableArgs,
    /// First version (inclusive).
    #[arg(long)]
    pub from: i64,
    /// Last version (inclusive); default the latest.
    #[arg(long)]
    pub to: Option<i64>,
}

#[derive(Args, Debug)]
pub struct MaintainArgs {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Warehouse root to use instead of the pipeline file's.
    #[arg(long)]
    pub warehouse: Option<String>,
    /// Keep files needed by versions newer than this many hours (time travel window).
    #[arg(long, default_value_t = 168)]
    pub retention_hours: u32,
    /// Allow a retention under 168 hours (readers of older versions may fail).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// The query, e.g. "SELECT klasse, count(*) FROM elevforhold WHERE is_current GROUP BY klasse".
    pub query: String,
    /// Warehouse root to use instead of the pipeline file's.
    #[arg(long)]
    pub warehouse: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Read every table as of this Delta version (transaction time); tables without it are left out.
    #[arg(long, conflicts_with = "timestamp")]
    pub version: Option<i64>,
    /// Read every table as of this commit time (transaction time), e.g. 2026-02-01T12:00:00Z.
    #[arg(long)]
    pub timestamp: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// Logging on stderr. Only elevflyt's own events are logged below INFO, whatever RUST_LOG
/// says: at DEBUG and TRACE its dependencies print Delta file statistics and Parquet page
/// filters, which hold the values of the columns — fødselsnummer and names (docs/ARCHITECTURE.md,
/// "Privacy"). elevflyt's own events never carry personal data at any level.
fn init_logging(cli: &Cli) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("elevflyt={}", cli.log_level))
    });
    let dependencies_at_info = tracing_subscriber::filter::filter_fn(|m| {
        m.target().starts_with("elevflyt") || *m.level() <= tracing::Level::INFO
    });
    let (json, text) = match cli.log_format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Text => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(dependencies_at_info)
        .with(json)
        .with(text)
        .init();
}

/// Examples for `--help`, per subcommand (the README's commands, runnable after `make run`).
const EXAMPLES: &[(&str, &str)] = &[
    ("run", "elevflyt run pipelines/bergen.toml\n  elevflyt run national/pipelines/*.toml   # a fleet, one after another in one process\n  elevflyt run pipelines/bergen.toml --dry-run\n  elevflyt run pipelines/voss.toml --warehouse s3://bucket/lake\n  elevflyt run pipelines/bergen.toml --accept-mass-change   # a school closed: publish it deliberately"),
    ("ingest", "elevflyt ingest pipelines/bergen.toml\n  elevflyt ingest pipelines/bergen.toml --as-of 2026-01-15"),
    ("standardize", "elevflyt standardize pipelines/bergen.toml"),
    ("publish", "elevflyt publish pipelines/bergen.toml"),
    ("sql", "elevflyt sql pipelines/bergen.toml \"SELECT skolenummer, klasse, count(*) FROM elevforhold WHERE is_current GROUP BY 1, 2\"\n  elevflyt sql pipelines/bergen.toml \"SELECT * FROM avvik WHERE lost IS NULL\" --format csv\n  elevflyt sql pipelines/bergen.toml \"SELECT count(*) FROM elev WHERE is_current\" --version 1"),
    ("history", "elevflyt history pipelines/bergen.toml elev\n  elevflyt history pipelines/voss.toml elevliste_vgs --format json"),
    ("changes", "elevflyt changes pipelines/bergen.toml elev --from 2\n  elevflyt changes pipelines/bergen.toml elevforhold --from 1 --to 3 --format csv"),
    ("check", "elevflyt check pipelines/bergen.toml"),
    ("maintain", "elevflyt maintain pipelines/bergen.toml\n  elevflyt maintain pipelines/bergen.toml --retention-hours 168"),
    ("report", "elevflyt report pipelines/voss.toml\n  elevflyt report pipelines/voss.toml --format html --out rapport.html"),
    ("generate", "elevflyt generate --kommune 4601 --pupils 10000 --snapshots 3 --out data/\n  elevflyt generate --kommune alle --pupils 1000000 --format vigo-csv --out data/\n  elevflyt generate --national --pupils 630000 --out national/   # 357 exports + pipeline files"),
    ("validate", "elevflyt validate pipelines/bergen.toml"),
    ("rules", "elevflyt rules"),
    ("serve", "elevflyt serve pipelines/sharing-vestland.toml\n  elevflyt serve pipelines/sharing-vestland.toml --listen 127.0.0.1:0"),
    ("share", "elevflyt share token pipelines/sharing-vestland.toml --recipient vestland --days 30 --out vestland.share\n  elevflyt share revoke pipelines/sharing-vestland.toml --recipient vestland\n  elevflyt share user pipelines/sharing-vestland.toml --name kari --kommune 4601 < passord.txt"),
    ("export", "elevflyt export vigo pipelines/bergen.toml --fylke 46 --out eksport/\n  elevflyt export vigo pipelines/voss.toml --fylke 46 --skule 46520 --encoding utf-8 --out eksport/"),
];

/// The command line with what only the running program knows: the registered input formats,
/// the tables, and an example for every subcommand.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let formats: String = crate::formats::REGISTRY
        .iter()
        .map(|f| format!("\n  {:<16} {}", f.name(), f.description()))
        .collect();
    let formats = format!("Input formats (`format = \"…\"` in a [[source]]):{formats}");
    let tables: String = crate::schema::PUBLISHED
        .iter()
        .map(|t| format!("\n  {:<16} {}", t.name, t.description))
        .chain(std::iter::once(format!(
            "\n  {:<16} Filene som kom inn, som dei vart leverte (ein per kjelde).",
            "raw_<source>"
        )))
        .collect();
    let tables = format!("Tables (under the pipeline's warehouse, catalog and schema):{tables}");
    let all_examples: String = EXAMPLES
        .iter()
        .filter(|(name, _)| ["run", "sql", "history", "changes", "report"].contains(name))
        .map(|(_, e)| format!("\n  {}", e.lines().next().unwrap_or_default()))
        .collect();
    let mut cmd =
        Cli::command().after_help(format!("Examples:{all_examples}\n\n{tables}\n\n{formats}"));
    for (name, example) in EXAMPLES {
        let mut extra = format!(
            "Example{}:\n  {example}",
            if example.contains('\n') { "s" } else { "" }
        );
        if ["sql", "history", "changes", "check", "maintain"].contains(name) {
            extra.push_str(&format!("\n\n{tables}"));
        }
        if ["generate", "validate"].contains(name) {
            extra.push_str(&format!("\n\n{formats}"));
        }
        cmd = cmd.mut_subcommand(*name, |c| c.after_help(extra));
    }
    cmd
}

/// A panic on a runtime thread is caught where its task is awaited and comes back as an error
/// (with the panic's message), which is said once at the end; the default hook would print it
/// with a backtrace first (a dependency panics so when, say, the disk is full). A panic on the
/// main thread is a crash and is printed as usual.
fn quiet_task_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("main") {
            default(info);
        } else {
            tracing::debug!(panic = %info, "a task panicked (reported as an error where it is awaited)");
        }
    }));
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    use clap::FromArgMatches;
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    init_logging(&cli);
    quiet_task_panics();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(dispatch(cli.command)) {
        Ok(()) => 0,
        Err(e) => {
            // Once: as a JSON log line when stderr is JSON, else as plain text.
            match cli.log_format {
                LogFormat::Json => {
                    tracing::error!(error = %e, exit_code = e.exit_code(), "elevflyt failed")
                }
                LogFormat::Text => eprintln!("error: {e}"),
            }
            e.exit_code()
        }
    }
}

fn context(args: &StageArgs, pipeline: &std::path::Path) -> Result<RunContext> {
    let pipeline = Pipeline::load(pipeline, args.warehouse.as_deref())?;
    let mut ctx = RunContext::new(pipeline);
    ctx.dry_run = args.dry_run;
    ctx.accept_mass_change = args.accept_mass_change;
    if let Some(t) = &args.until {
        ctx.until = Some(crate::formats::asof::parse_time(t).ok_or_else(|| {
            Error::Usage(format!("--until: cannot read `{t}` as a date or time (use 2026-01-15 or 2026-01-15T08:00:00Z)"))
        })?);
    }
    if let Some(t) = &args.as_of {
        ctx.as_of_override = Some(crate::formats::asof::parse_time(t).ok_or_else(|| {
            Error::Usage(format!("--as-of: cannot read `{t}` as a date or time (use 2026-01-15 or 2026-01-15T08:00:00Z)"))
        })?);
    }
    Ok(ctx)
}

async fn dispatch(cmd: Command) -> Result<()> {
    let (args, stage) = match cmd {
        Command::Run(a) => (a, Stage::All),
        Command::Ingest(a) => (a, Stage::Ingest),
        Command::Standardize(a) => (a, Stage::Standardize),
        Command::Publish(a) => (a, Stage::Publish),
        Command::Sql(a) => return sql(a).await,
        Command::History(a) => {
            let p = Pipeline::load(&a.pipeline, a.warehouse.as_deref())?;
            return print_batches(&crate::ops::history(&p, &a.table).await?, a.format);
        }
        Command::Changes(a) => {
            let p = Pipeline::load(&a.table.pipeline, a.table.warehouse.as_deref())?;
            let batches = crate::ops::changes(&p, &a.table.table, a.from, a.to).await?;
            return print_batches(&batches, a.table.format);
        }
        Command::Check(a) => return check(a).await,
        Command::Validate(a) => return validate(a),
        Command::Generate(a) => return generate(a),
        Command::Report(a) => {
            let p = Pipeline::load(&a.pipeline, a.warehouse.as_deref())?;
            let r = crate::report::build(&p).await?;
            let body = match a.format {
                ReportFormat::Text => crate::report::text(&r),
                ReportFormat::Json => {
                    serde_json::to_string_pretty(&r).map_err(|e| Error::Other(e.to_string()))?
                        + "\n"
                }
                ReportFormat::Html => crate::report::html(&r),
            };
            match a.out {
                Some(path) => std::fs::write(&path, body)
                    .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?,
                None => print!("{body}"),
            }
            return Ok(());
        }
        Command::Maintain(a) => {
            if a.retention_hours < 168 && !a.force {
                return Err(Error::Usage(format!(
                    "--retention-hours {} is under 168 (7 days): readers of older versions may fail; add --force to do it anyway",
                    a.retention_hours
                )));
            }
            let p = Pipeline::load(&a.pipeline, a.warehouse.as_deref())?;
            let done =
                crate::ops::maintain(&p, chrono::Duration::hours(a.retention_hours as i64)).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&done).unwrap_or_default()
            );
            return Ok(());
        }
        Command::Rules => {
            print_rules();
            return Ok(());
        }
        Command::Serve(a) => {
            let now = a
                .now
                .as_deref()
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(t)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|_| {
                            Error::Usage(format!(
                                "--now `{t}`: use a time like 2027-03-01T12:00:00+01:00"
                            ))
                        })
                })
                .transpose()?;
            return crate::sharing::serve(&a.sharing, a.listen, now).await;
        }
        Command::Share(ShareCommand::Token(a)) => {
            let sharing = crate::sharing::config::Sharing::load(&a.sharing)?;
            let token = crate::sharing::tokens::mint(&sharing, &a.recipient, a.days, &a.out)?;
            eprintln!(
                "Wrote the profile file {} for `{}` (valid {} days). The token, shown this once:",
                a.out.display(),
                a.recipient,
                a.days
            );
            println!("{token}");
            return Ok(());
        }
        Command::Share(ShareCommand::Revoke(a)) => {
            let sharing = crate::sharing::config::Sharing::load(&a.sharing)?;
            let n = crate::sharing::tokens::revoke(&sharing, &a.recipient, a.token.as_deref())?;
            println!("revoked {n} token(s) of `{}`", a.recipient);
            return Ok(());
        }
        Command::Share(ShareCommand::User(a)) => {
            let sharing = crate::sharing::config::Sharing::load(&a.sharing)?;
            let mut password = String::new();
            std::io::stdin().read_line(&mut password).map_err(|e| {
                Error::Usage(format!("cannot read the password from standard input: {e}"))
            })?;
            let password = password.trim_end_matches(['\r', '\n']);
            crate::sharing::users::set(&sharing, &a.name, &a.kommune, &a.skule, password)?;
            println!(
                "operator `{}` may see kommune {}{}",
                a.name,
                a.kommune.join(", "),
                if a.skule.is_empty() {
                    String::new()
                } else {
                    format!(" (schools {})", a.skule.join(", "))
                }
            );
            return Ok(());
        }
        Command::Export(ExportCommand::Vigo(a)) => {
            let p = Pipeline::load(&a.pipeline, a.warehouse.as_deref())?;
            let encoding = match a.encoding {
                ExportEncoding::Windows1252 => crate::sharing::export::Encoding::Windows1252,
                ExportEncoding::Utf8 => crate::sharing::export::Encoding::Utf8,
            };
            let done =
                crate::sharing::export::vigo(&p, &a.fylke, a.skule.as_deref(), &a.out, encoding)
                    .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&done).unwrap_or_default()
            );
            return Ok(());
        }
        Command::SchemaDocs => {
            print!("{}", crate::schema::markdown_reference());
            return Ok(());
        }
    };
    if let [one] = &args.pipeline[..] {
        let ctx = context(&args, one)?;
        let summary = crate::run::execute(&ctx, stage).await?;
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
        return Ok(());
    }
    run_fleet(&args, stage).await
}

/// Several pipelines in one process, one after another; one that fails does not stop the
/// others. Prints a JSON array: per pipeline its file, `ok` or the error, and its summary.
async fn run_fleet(args: &StageArgs, stage: Stage) -> Result<()> {
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for path in &args.pipeline {
        let t = std::time::Instant::now();
        let result = match context(args, path) {
            Ok(ctx) => crate::run::execute(&ctx, stage).await,
            Err(e) => Err(e),
        };
        let seconds = (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        let entry = match result {
            Ok(summary) => serde_json::json!({
                "pipeline": path.display().to_string(),
                "status": "ok",
                "seconds": seconds,
                "summary": summary,
            }),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                failed.push(path.display().to_string());
                serde_json::json!({
                    "pipeline": path.display().to_string(),
                    "status": "failed",
                    "seconds": seconds,
                    "error": e.to_string(),
                })
            }
        };
        out.push(entry);
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    tracing::info!(
        pipelines = args.pipeline.len(),
        failed = failed.len(),
        seconds = started.elapsed().as_secs_f64(),
        "fleet finished"
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "{} of {} pipelines failed: {}",
            failed.len(),
            args.pipeline.len(),
            failed.join(", ")
        )))
    }
}

fn print_rules() {
    println!(
        "{:<22} {:<7} {:<8} {:<12} explanation",
        "rule", "default", "terskel", "table"
    );
    for r in crate::quality::rules::RULES {
        let threshold = r
            .threshold
            .map(|t| format!("{:.0} %", t * 100.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<22} {:<7} {:<8} {:<12} {}",
            r.name,
            r.default.as_str(),
            threshold,
            r.table,
            r.explanation
        );
    }
    println!(
        "\nOverride in the pipeline file: [quality] <rule> = \"warn\" | \"drop\" | \"fail\", \
         or for a rule with a threshold: <rule> = {{ alvorsgrad = \"fail\", terskel = 0.05 }}"
    );
}

async fn sql(a: SqlArgs) -> Result<()> {
    let pipeline = Pipeline::load(&a.pipeline, a.warehouse.as_deref())?;
    let timestamp = match &a.timestamp {
        Some(t) => Some(crate::formats::asof::parse_time(t).ok_or_else(|| {
            Error::Usage(format!("--timestamp: cannot read `{t}` as a date or time"))
        })?),
        None => None,
    };
    let session = crate::ops::session_at(&pipeline, a.version, timestamp).await?;
    // A query that does not parse or names no table is bad usage (exit 2), like a bad flag.
    let batches = crate::delta::query(&session, &a.query)
        .await
        .map_err(|e| match e {
            Error::DataFusion(e) => Error::Usage(format!("sql: {e}")),
            e => e,
        })?;
    print_batches(&batches, a.format)
}

fn generate(a: GenerateArgs) -> Result<()> {
    let kommune = a
        .kommune
        .clone()
        .unwrap_or_else(|| if a.national { "alle" } else { "4601" }.to_string());
    let kommuner = if kommune == "alle" {
        crate::quality::kommuner::all()
            .into_iter()
            .map(str::to_string)
            .collect()
    } else {
        let list: Vec<String> = kommune.split(',').map(|k| k.trim().to_string()).collect();
        if let Some(bad) = list
            .iter()
            .find(|k| !crate::quality::kommuner::is_kommune(k))
        {
            return Err(Error::Usage(format!(
                "--kommune `{bad}` is not in the 2024 list (give kommunenummer, comma-separated, or `alle`)"
            )));
        }
        list
    };
    let format =
        crate::formats::find(&a.format).map_err(|e| Error::Usage(format!("--format: {e}")))?;
    if !(0.0..=1.0).contains(&a.churn) {
        return Err(Error::Usage("--churn is a share between 0 and 1".into()));
    }
    let start = chrono::NaiveDate::parse_from_str(&a.start, "%Y-%m-%d")
        .map_err(|_| Error::Usage(format!("--start `{}`: use YYYY-MM-DD", a.start)))?;
    let spec = crate::generate::Spec {
        kommuner,
        pupils: a.pupils,
        snapshots: a.snapshots,
        churn: a.churn,
        seed: a.seed,
        start,
        interval_days: a.interval_days,
    };
    let t = std::time::Instant::now();
    let files = if a.national {
        let files = crate::generate::generate(&spec, &a.out, &|out, date, population| {
            crate::generate::per_kommune(out, date, population, &|dir, date, part| {
                format.write_sample(dir, date, part)
            })
        })?;
        crate::generate::fleet_pipelines(&a.out, &spec.kommuner, format.name())?;
        files
    } else {
        crate::generate::generate(&spec, &a.out, &|out, date, population| {
            format.write_sample(out, date, population)
        })?
    };
    eprintln!(
        "wrote {} files to {} in {:.1} s",
        files.len(),
        a.out.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `elevflyt validate`: the checks a run makes before it opens any storage.
fn validate(a: PipelineArgs) -> Result<()> {
    let p = Pipeline::load(&a.pipeline, a.warehouse.as_deref())?;
    for s in &p.file.sources {
        p.source_location(s)?;
    }
    let sources: Vec<String> = p
        .file
        .sources
        .iter()
        .map(|s| format!("{} ({})", s.name, s.format))
        .collect();
    println!(
        "ok: {} is valid: pipeline `{}`, kommune {}, tables under {}, sources: {}",
        a.pipeline.display(),
        p.name(),
        p.kommunenummer(),
        p.table_url("").as_str().trim_end_matches('/'),
        sources.join(", ")
    );
    Ok(())
}

async fn check(a: PipelineArgs) -> Result<()> {
    let p = Pipeline::load(&a.pipeline, a.warehouse.as_deref())?;
    let session = crate::delta::session(&p, &crate::schema::SCD2_NAMES).await?;
    let stored: Vec<&str> = crate::schema::SCD2_NAMES
        .into_iter()
        .filter(|t| crate::delta::has_table(&session, t))
        .collect();
    if stored.is_empty() {
        return Err(Error::Other(format!(
            "nothing to check: no elev, elevforhold or skole table under {} (run `elevflyt run` first, or check --warehouse)",
            p.table_url("").as_str().trim_end_matches('/')
        )));
    }
    let violations = crate::ops::check_session(&session).await?;
    if violations.is_empty() {
        println!("ok: {} keep every SCD2 invariant", stored.join(", "));
        return Ok(());
    }
    for v in &violations {
        println!("{}: {} broken for key {}", v.table, v.invariant, v.key);
    }
    Err(Error::Other(format!(
        "{} SCD2 invariant violation(s)",
        violations.len()
    )))
}

/// A batch whose text cells cannot start a spreadsheet formula: a cell beginning with `=`, `+`,
/// `-`, `@`, a tab or a carriage return gets a leading `'` (OWASP's advice for CSV injection),
/// so a name such as `=cmd|' /C calc'!A0` opens as text.
pub fn csv_safe(b: &arrow::array::RecordBatch) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{Array, ArrayRef, StringArray};
    let risky = |s: &str| s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let columns = b
        .columns()
        .iter()
        .map(|c| -> Result<ArrayRef> {
            if !matches!(
                c.data_type(),
                arrow::datatypes::DataType::Utf8
                    | arrow::datatypes::DataType::LargeUtf8
                    | arrow::datatypes::DataType::Utf8View
            ) {
                return Ok(c.clone());
            }
            let text = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)?;
            let Some(text) = text.as_any().downcast_ref::<StringArray>() else {
                return Ok(c.clone());
            };
            if !text.iter().flatten().any(risky) {
                return Ok(c.clone());
            }
            let safe: StringArray = text
                .iter()
                .map(|v| {
                    v.map(|s| {
                        if risky(s) {
                            format!("'{s}")
                        } else {
                            s.to_string()
                        }
                    })
                })
                .collect();
            Ok(arrow::compute::cast(&safe, c.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(arrow::array::RecordBatch::try_new(b.schema(), columns)?)
}

pub fn print_batches(batches: &[arrow::array::RecordBatch], format: OutputFormat) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Table => {
            writeln!(
                out,
                "{}",
                arrow::util::pretty::pretty_format_batches(batches)?
            )
            .map_err(|e| Error::Other(e.to_string()))?;
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in batches {
                w.write(&csv_safe(b)?)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            let refs: Vec<&arrow::array::RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
            writeln!(out).map_err(|e| Error::Other(e.to_string()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[test]
    fn every_command_has_an_example_and_the_query_commands_list_the_tables() {
        let mut cmd = super::command();
        for sub in cmd.get_subcommands_mut() {
            if sub.is_hide_set() {
                continue;
            }
            let help = sub.render_long_help().to_string();
            assert!(
                help.contains(&format!("elevflyt {}", sub.get_name())),
                "{} --help has no example",
                sub.get_name()
            );
            if ["sql", "history", "changes"].contains(&sub.get_name()) {
                assert!(help.contains("elevliste_vgs") && help.contains("raw_<source>"));
            }
        }
    }

    use arrow::array::{Array, Int64Array, RecordBatch, StringArray};

    #[test]
    fn csv_cells_cannot_start_a_formula() {
        let names = StringArray::from(vec![
            Some("=cmd|' /C calc'!A0"),
            Some("Kari Nordmann"),
            None,
            Some("@SUM(A1)"),
            Some("-1+1"),
        ]);
        let numbers = Int64Array::from(vec![-1, 2, 3, 4, 5]);
        let b = RecordBatch::try_from_iter([
            ("elev_namn", Arc::new(names) as _),
            ("n", Arc::new(numbers) as _),
        ])
        .unwrap();
        let safe = super::csv_safe(&b).unwrap();
        let s = safe
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let got: Vec<Option<&str>> = s.iter().collect();
        assert_eq!(
            got,
            [
                Some("'=cmd|' /C calc'!A0"),
                Some("Kari Nordmann"),
                None,
                Some("'@SUM(A1)"),
                Some("'-1+1"),
            ]
        );
        let n = safe
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(n.value(0), -1, "numbers are not text: left alone");
    }
}
