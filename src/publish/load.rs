//! What publish reads before it applies anything: the version of each SCD2 table it decides
//! from (a commit on top of it conflicts with any run that committed since), the identity map,
//! and each table's current rows — loaded on other tasks at the same time.

use std::collections::HashSet;

use deltalake::datafusion::prelude::SessionContext;

use super::apply::Tables;
use super::identity::Identity;
use super::metrics::current_count;
use super::plan::TableRun;
use super::row_hash;
use super::scd2::{Key, Scd2, State};
use super::state::{self, Label};
use crate::context::RunContext;
use crate::error::Result;
use crate::par::joined;
use crate::schema::{self, Table};
use rustc_hash::FxHashSet;

/// The stored state a publish starts from.
pub struct Loaded {
    pub tables: Tables,
    pub identity: Identity,
    /// Current pupils stored before this run (for the row-count change).
    pub stored_current: usize,
    pub session: SessionContext,
    /// The tables as read (version and id), for labelling the state written after the commit.
    pub labels: [Label; 3],
    /// Where the current rows came from: the state file, or the tables and why.
    pub current_from: String,
    /// Whether the engines are the ones read before standardize (`Preloaded`), which the
    /// rows standardize carried forward were decided against.
    pub preloaded: bool,
    /// Whether the identity map is the one read before standardize, in which the pupils it
    /// carried unread were found.
    pub identity_preloaded: bool,
    /// The summaries standardize found the records it carried unread in, when the engines are
    /// the preloaded ones (else empty): the next day's summaries of those records are their
    /// places in it (docs/ARCHITECTURE.md, "Carried records").
    pub memo: crate::carried::Memo,
    /// What the preloaded state was read from, when the engines are the preloaded ones: the
    /// next state is then written as a change beside it (docs/ARCHITECTURE.md, "The current
    /// state").
    pub base: Option<state::Base>,
}

/// The current state read before standardize (docs/ARCHITECTURE.md, "Carried rows"): the
/// engines of the state file when it is of the tables' present versions.
pub struct Preloaded {
    labels: [Label; 3],
    engines: [Scd2; 3],
    /// Summaries of the records standardize may carry unread (docs/ARCHITECTURE.md, "Carried
    /// records").
    memo: crate::carried::Memo,
    /// What the state was read from.
    base: state::Base,
    /// The identity map as read with the state (standardize finds carried pupils' identifiers
    /// in it), its session, and the version of `elev_id` it was read at: publish uses it while
    /// `elev_id` is still at that version.
    identity: Option<(Identity, SessionContext, Option<u64>)>,
}

/// The version `elev_id` is at (`None`: no table yet).
async fn elev_id_version(p: &crate::config::Pipeline) -> Result<Option<u64>> {
    Ok(crate::delta::try_open(&p.table_url(schema::ELEV_ID.name))
        .await?
        .and_then(|t| t.version()))
}

/// The identity map, the session it was read in, and the version of `elev_id` it is of (read
/// first: a later version read meanwhile only makes publish read the map again).
async fn read_identity(
    p: &crate::config::Pipeline,
) -> Result<(Identity, SessionContext, Option<u64>)> {
    let version = elev_id_version(p).await?;
    let session = crate::delta::session(p, &[schema::ELEV_ID.name]).await?;
    let identity = Identity::load(p, &session).await?;
    Ok((identity, session, version))
}

impl std::fmt::Debug for Preloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preloaded")
            .field("labels", &self.labels)
            .field("rows", &self.engines.each_ref().map(|e| e.state.len()))
            .finish()
    }
}

/// The versions of the three SCD2 tables as they are now (the three opened at the same time).
async fn labels(ctx: &RunContext) -> Result<([Label; 3], [u64; 3])> {
    let urls = state::TABLES.map(|name| ctx.pipeline.table_url(name));
    let opened = futures::future::join_all(urls.iter().map(crate::delta::try_open)).await;
    let mut labels: [Label; 3] = [None; 3];
    let mut versions = [0; 3];
    for ((t, label), version) in opened
        .into_iter()
        .zip(labels.iter_mut())
        .zip(versions.iter_mut())
    {
        let t = t?;
        *version = t.as_ref().and_then(|t| t.version()).unwrap_or(0);
        *label = state::label(t.as_ref());
    }
    Ok((labels, versions))
}

/// Reads the state file when it is of the tables' present versions; `None` otherwise.
pub async fn preload(ctx: &RunContext) -> Result<Option<Preloaded>> {
    let (labels, _) = labels(ctx).await?;
    if labels.iter().all(Option::is_none) {
        return Ok(None);
    }
    // The identity map is read at the same time (publish needs it either way).
    let (state, identity) = tokio::join!(state::read(ctx, labels), read_identity(&ctx.pipeline));
    Ok(state?.ok().map(|((engines, memo), base)| Preloaded {
        labels,
        engines,
        memo,
        base,
        identity: identity.ok(),
    }))
}

/// Which current version each staged-row hash made, for the two large tables: what standardize
/// looks a row up in to carry it forward. It holds positions in the engines' state only (a
/// million versions: 10 MB, not the 50 MB of a map from hash to id); the hash and the id are
/// read there.
pub struct CarryIndex<'p> {
    elev: Positions<'p>,
    elevforhold: Positions<'p>,
}

impl CarryIndex<'_> {
    /// The id of the current pupil version made from a staged row with this hash.
    pub fn elev(&self, staged: u64) -> Option<[u64; 2]> {
        self.elev.find(staged)
    }

    /// The id of the current elevforhold version made from a staged row with this hash.
    pub fn elevforhold(&self, staged: u64) -> Option<[u64; 2]> {
        self.elevforhold.find(staged)
    }
}

/// The current versions of one engine with a staged-row hash and an id for a key, by that hash.
struct Positions<'p> {
    state: &'p State,
    table: hashbrown::HashTable<u32>,
    /// Hashes that made more than one current version: which one a row is cannot be told, so
    /// such rows are staged.
    ambiguous: FxHashSet<u64>,
}

impl<'p> Positions<'p> {
    fn of(engine: &'p Scd2) -> Self {
        let state = &engine.state;
        let mut table = hashbrown::HashTable::with_capacity(state.len());
        let mut ambiguous = FxHashSet::default();
        // A staged-row hash is an xxh3 digest: its bits serve as the table's hash.
        let staged_at = |p: &u32| staged_at(state, *p);
        for (pos, (key, cur)) in state.iter().enumerate() {
            if !matches!(key, Key::Id(_)) || cur.staged == 0 {
                continue;
            }
            let h = cur.staged;
            if table.find(h, |p| staged_at(p) == h).is_some() {
                ambiguous.insert(h);
                continue;
            }
            // Positions fit: the state file's engines are of at most u32::MAX rows (its count
            // of rows is read before they are, and the rows must all be in memory).
            table.insert_unique(h, pos as u32, staged_at);
        }
        Positions {
            state,
            table,
            ambiguous,
        }
    }

    fn find(&self, staged: u64) -> Option<[u64; 2]> {
        let pos = self
            .table
            .find(staged, |p| staged_at(self.state, *p) == staged)?;
        if self.ambiguous.contains(&staged) {
            return None;
        }
        match self.state.get_index(*pos as usize) {
            Some((Key::Id(id), _)) => Some(id.to_owned()),
            _ => None,
        }
    }
}

/// The staged-row hash of the version at position `p` of a state (`0`, "not known", past its
/// end).
fn staged_at(state: &State, p: u32) -> u64 {
    state.get_index(p as usize).map_or(0, |(_, c)| c.staged)
}

impl Preloaded {
    /// The identity map read with the state.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref().map(|(i, _, _)| i)
    }

    /// The summaries of records carried unread; `None` when there are none.
    pub fn memo(&self) -> Option<&crate::carried::Memo> {
        (!self.memo.is_empty()).then_some(&self.memo)
    }

    /// The index of the current versions by staged-row hash (versions without one, or with a
    /// key that is not an id, are not in it: their rows are staged).
    pub fn carry_index(&self) -> CarryIndex<'_> {
        let [_, elev, ef] = &self.engines;
        let (elev, elevforhold) = crate::par::both(|| Positions::of(elev), || Positions::of(ef));
        CarryIndex { elev, elevforhold }
    }
}

/// Loads the stored state, except the current rows of sources whose history is rebuilt. The
/// engines `preloaded` before standardize are used when the tables are still at their versions.
pub async fn load(
    ctx: &RunContext,
    rebuilt: &HashSet<String>,
    preloaded: Option<Preloaded>,
) -> Result<Loaded> {
    let mut tables = Tables {
        skole: TableRun::new(&schema::SKOLE, rebuilt),
        elev: TableRun::new(&schema::ELEV, rebuilt),
        elevforhold: TableRun::new(&schema::ELEVFORHOLD, rebuilt),
    };
    // The versions read below are at least these.
    let (labels, versions) = labels(ctx).await?;
    for (run, version) in tables.all_mut().into_iter().zip(versions) {
        run.read_version = version;
    }
    let mut preloaded = preloaded.filter(|p| rebuilt.is_empty() && p.labels == labels);
    // The current rows from the state file of exactly these versions, when there is one
    // (docs/ARCHITECTURE.md, "The current state"); a rebuilt source's are replayed instead.
    // The identity map loads on another task meanwhile (it is needed either way), unless the
    // one read with the state is of `elev_id`'s present version.
    let use_state = rebuilt.is_empty() && labels.iter().any(Option::is_some);
    let read_before = preloaded.as_mut().and_then(|p| p.identity.take());
    let early_identity = use_state.then(|| {
        let pipeline = ctx.pipeline.clone();
        tokio::spawn(async move {
            if let Some((identity, session, version)) = read_before {
                if elev_id_version(&pipeline).await? == version {
                    return Ok((identity, session, true));
                }
            }
            let (identity, session, _) = read_identity(&pipeline).await?;
            Ok::<_, crate::error::Error>((identity, session, false))
        })
    });
    let was_preloaded = preloaded.is_some();
    let mut memo = crate::carried::Memo::default();
    let mut base = None;
    let from_state = match (preloaded, use_state) {
        (Some(p), _) => {
            memo = p.memo;
            base = Some(p.base);
            Ok(Ok(p.engines))
        }
        // Read without the summaries: the next state is written whole.
        (None, true) => (state::read(ctx, labels).await).map(|r| r.map(|((e, _), _)| e)),
        (None, false) => Ok(Err(state::Unused::Missing)),
    };
    let early_identity = match early_identity {
        Some(task) => Some(joined(task, "loading the identity map").await),
        None => None,
    };
    let from_state = from_state?;
    let current_from = match &from_state {
        Ok(_) => "state file".to_string(),
        Err(why) => format!("tables ({why})"),
    };
    tracing::debug!(current_from = %current_from, "current rows");
    if let (Ok([skole, elev, elevforhold]), Some(loaded)) = (from_state, early_identity) {
        tables.skole.engine = skole;
        tables.elev.engine = elev;
        tables.elevforhold.engine = elevforhold;
        let (identity, session, identity_preloaded) = loaded?;
        return Ok(Loaded {
            stored_current: tables.elev.engine.state.len(),
            tables,
            identity,
            session,
            labels,
            current_from,
            preloaded: was_preloaded,
            identity_preloaded,
            memo,
            base,
        });
    }
    let session = crate::delta::session(
        &ctx.pipeline,
        &[
            schema::SKOLE.name,
            schema::ELEV.name,
            schema::ELEVFORHOLD.name,
            schema::ELEV_ID.name,
        ],
    )
    .await?;
    // The identity map and the current elevforhold are loaded on other tasks (other cores)
    // while the current elev rows load here.
    let identity_task = tokio::spawn({
        let (pipeline, session) = (ctx.pipeline.clone(), session.clone());
        async move { Identity::load(&pipeline, &session).await }
    });
    let ef_task = tokio::spawn({
        let (session, rebuilt) = (session.clone(), rebuilt.clone());
        let mut engine = std::mem::take(&mut tables.elevforhold.engine);
        async move {
            load_current(&session, &schema::ELEVFORHOLD, &mut engine, &rebuilt)
                .await
                .map(|()| engine)
        }
    });
    let loaded = async {
        load_current(&session, &schema::ELEV, &mut tables.elev.engine, rebuilt).await?;
        load_current(&session, &schema::SKOLE, &mut tables.skole.engine, rebuilt).await?;
        // Without rebuilt sources, the current rows just loaded are all of them.
        if rebuilt.is_empty() {
            Ok(tables.elev.engine.state.len())
        } else {
            current_count(&session, "elev").await
        }
    }
    .await;
    // Every task is awaited before an error is returned.
    let identity = joined(identity_task, "loading the identity map").await;
    let ef_engine = joined(ef_task, "loading elevforhold").await;
    let stored_current = loaded?;
    tables.elevforhold.engine = ef_engine?;
    Ok(Loaded {
        tables,
        identity: identity?,
        stored_current,
        session,
        labels,
        current_from,
        preloaded: false,
        identity_preloaded: false,
        memo: Default::default(),
        base: None,
    })
}

/// Loads the current rows (key, hash, valid_from, scope) of an SCD2 table, except those of
/// sources whose history is rebuilt in this run.
async fn load_current(
    ctx: &SessionContext,
    t: &Table,
    engine: &mut Scd2,
    rebuilt: &HashSet<String>,
) -> Result<()> {
    if !crate::delta::has_table(ctx, t.name) {
        return Ok(());
    }
    let (school, parent) = match t.name {
        "elevforhold" => ("skolenummer", "elev_id"),
        _ => ("NULL", "NULL"),
    };
    let sql = format!(
        "SELECT {key} AS k, rad_hash, valid_from, kildesystem, {school} AS s, {parent} AS p FROM {name} WHERE is_current{skip}",
        key = t.scd2_key()?,
        name = t.name,
        skip = not_in_sources(rebuilt),
    );
    let started = std::time::Instant::now();
    crate::delta::for_each_batch(ctx, &sql, |b| {
        // Read where the reader put them: no copy of a million keys into another layout.
        let k = crate::delta::text(b, "k")?;
        let h = crate::delta::text(b, "rad_hash")?;
        let v = crate::delta::micros(b, "valid_from")?;
        let ks = crate::delta::text(b, "kildesystem")?;
        let s = crate::delta::text(b, "s")?;
        let p = crate::delta::text(b, "p")?;
        engine.state.reserve(b.num_rows());
        for i in 0..b.num_rows() {
            engine.load_current(
                k.value(i),
                row_hash::parse_hash(h.value(i)),
                v.value(i),
                ks.opt(i),
                s.opt(i),
                p.opt(i),
            );
        }
        Ok(())
    })
    .await?;
    tracing::debug!(
        table = t.name,
        rows = engine.state.len(),
        ms = started.elapsed().as_millis() as u64,
        "current rows loaded"
    );
    Ok(())
}

/// ` AND kildesystem NOT IN (...)` for a set of source names (validated lower-case identifiers).
fn not_in_sources(sources: &HashSet<String>) -> String {
    if sources.is_empty() {
        return String::new();
    }
    let list = sources
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(" AND (kildesystem IS NULL OR kildesystem NOT IN ({list}))")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> String {
        uuid::Uuid::from_u128(n).to_string()
    }

    #[test]
    fn the_carry_index_finds_ids_by_staged_hash_and_not_an_ambiguous_one() {
        let mut elev = Scd2::default();
        for n in 1..=1000u128 {
            elev.load_entry(Key::of(&id(n)), n, 10, Some("s"), None, None, n as u64 * 7);
        }
        // Two current versions made from rows with the same hash: which one a row is cannot
        // be told.
        elev.load_entry(Key::of(&id(2001)), 1, 10, None, None, None, 42_000);
        elev.load_entry(Key::of(&id(2002)), 1, 10, None, None, None, 42_000);
        // Not known (0), and a key that is not an id.
        elev.load_entry(Key::of(&id(3001)), 1, 10, None, None, None, 0);
        elev.load_entry(Key::of("46591"), 1, 10, None, None, None, 99);
        let pre = Preloaded {
            labels: [None; 3],
            engines: [Scd2::default(), elev, Scd2::default()],
            memo: Default::default(),
            base: Default::default(),
            identity: None,
        };
        let index = pre.carry_index();
        for n in 1..=1000u128 {
            let want = match Key::of(&id(n)) {
                Key::Id(v) => v,
                Key::Text(_) => unreachable!(),
            };
            assert_eq!(index.elev(n as u64 * 7), Some(want), "row {n}");
        }
        assert_eq!(index.elev(42_000), None);
        assert_eq!(index.elev(0), None);
        assert_eq!(index.elev(99), None);
        assert_eq!(index.elev(8), None);
        assert_eq!(index.elevforhold(7), None, "another table's index");
    }
}
