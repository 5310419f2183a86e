//! A load generator: signed state-patch transactions with typical Xian writes,
//! paced at a steady rate, from a pool of deterministic accounts.
//!
//! * Accounts are [`account_key::derive`]`(seed, i)`. Transactions go round robin over
//!   the accounts; each account belongs to one worker thread and one
//!   [`Submitter`] (node), so its transactions reach that node's mempool in
//!   nonce order.
//! * An account's nonce is fetched once (on its first transaction), then
//!   counted locally: +1 per accepted transaction. A refusal for the nonce
//!   ([`code::BAD_NONCE`]) or a failed broadcast makes the account fetch it again.
//! * Pacing: transaction *k* is due at *k / rate* seconds. A generator that
//!   fell behind (a slow node) skips what is more than one second overdue, so
//!   it never bursts more than one second of backlog; nothing new is handed
//!   out once the duration is over (the workers' short queues still drain).
//!
//! The generator talks to nodes and the clock through traits ([`Submitter`],
//! [`Clock`]) so tests run it in-process against a fake chain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use serde::Serialize;

use crate::rpc::RpcClient;
use statesnap::node::QueryCode;
use statesnap::protocol::account_key;
use statesnap::protocol::tx::{code, nonce_key, parse_nonce, Action, Op, Tx, TxBody};
use statesnap::store::generate::{big_int, fixed, time};
use statesnap::store::prng::Prng;

/// Where transactions go: a node (its RPC) or a fake in tests.
pub trait Submitter: Sync {
    /// The account's next nonce as the node sees it.
    fn nonce(&self, account: &[u8; 32]) -> anyhow::Result<u64>;
    /// Broadcasts `tx`; returns the CheckTx result. `Err` when no answer came.
    fn submit(&self, tx: &[u8]) -> anyhow::Result<CheckResult>;
}

/// A CheckTx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub code: u32,
    pub log: String,
}

/// Time since the run started. Only the pacing thread reads and sleeps on it.
pub trait Clock: Sync {
    fn now(&self) -> Duration;
    /// Sleeps until `now() >= t` (or returns at once when it already is).
    fn sleep_until(&self, t: Duration);
}

/// The real clock.
pub struct SystemClock(Instant);

impl SystemClock {
    pub fn start() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }

    fn sleep_until(&self, t: Duration) {
        if let Some(d) = t.checked_sub(self.now()) {
            std::thread::sleep(d);
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub chain_id: String,
    /// Transactions per second (> 0).
    pub rate: f64,
    pub duration: Duration,
    /// Accounts in the pool (≥ 1).
    pub accounts: usize,
    /// Seed of the account keys and of the transaction contents.
    pub seed: u64,
    /// Concurrent broadcasts per submitter (≥ 1).
    pub workers_per_submitter: usize,
    /// How often (clock time) the progress callback is called.
    pub progress_every: Duration,
}

impl LoadConfig {
    /// Defaults: 50 accounts, seed 1, 2 workers per node, progress every 5 s.
    pub fn new(chain_id: &str, rate: f64, duration: Duration) -> Self {
        LoadConfig {
            chain_id: chain_id.to_string(),
            rate,
            duration,
            accounts: 50,
            seed: 1,
            workers_per_submitter: 2,
            progress_every: Duration::from_secs(5),
        }
    }

    fn check(&self, submitters: usize) -> anyhow::Result<()> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            bail!("rate {} is not a positive number of transactions per second", self.rate);
        }
        if self.accounts == 0 {
            bail!("the account pool is empty: use at least 1 account");
        }
        if self.workers_per_submitter == 0 {
            bail!("workers per node must be at least 1");
        }
        if submitters == 0 {
            bail!("no node to send to: give at least one RPC URL");
        }
        Ok(())
    }
}

/// Counts of a run. `sent` = `accepted` + `refused` + broadcasts that failed;
/// `errors` also counts failed nonce queries.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadStats {
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    pub errors: u64,
    pub seconds: f64,
    /// `sent / seconds`.
    pub rate: f64,
    /// The most recent refusal log or error message, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_problem: Option<String>,
}

/// When each transaction is due, with the one-second backlog cap.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: f64,
    next: u64,
    skipped: u64,
}

impl Pacer {
    pub fn new(rate: f64) -> Self {
        Pacer {
            rate,
            next: 0,
            skipped: 0,
        }
    }

    /// When the next transaction is due (time since the start), given the
    /// time `now`; the transaction counts as issued. Transactions due more
    /// than one second before `now` are skipped.
    pub fn next_due(&mut self, now: Duration) -> Duration {
        let oldest = ((now.as_secs_f64() - 1.0) * self.rate).ceil();
        if oldest > self.next as f64 {
            let oldest = oldest as u64;
            self.skipped += oldest - self.next;
            self.next = oldest;
        }
        let due = Duration::from_secs_f64(self.next as f64 / self.rate);
        self.next += 1;
        due
    }

    /// Transactions skipped because they were over a second late.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Live counters, shared by the workers and read for progress.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    last_problem: Mutex<Option<String>>,
}

impl Counters {
    fn problem(&self, counter: &AtomicU64, msg: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_problem.lock() {
            *last = Some(msg);
        }
    }

    fn stats(&self, elapsed: Duration) -> LoadStats {
        let sent = self.sent.load(Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        LoadStats {
            sent,
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            seconds,
            rate: if seconds > 0.0 { sent as f64 / seconds } else { 0.0 },
            last_problem: self.last_problem.lock().ok().and_then(|l| l.clone()),
        }
    }
}

/// An account of the pool.
struct Account {
    key: SigningKey,
    id: [u8; 32],
}

/// Runs the load until `cfg.duration` has passed on `clock` or `stop` is set;
/// calls `progress` every `cfg.progress_every`. Account *i* uses
/// `submitters[(i % workers) % submitters.len()]`, with
/// `workers = submitters.len() × cfg.workers_per_submitter`.
pub fn run_load<S: Submitter>(
    cfg: &LoadConfig,
    submitters: &[S],
    clock: &dyn Clock,
    stop: &AtomicBool,
    mut progress: impl FnMut(&LoadStats),
) -> anyhow::Result<LoadStats> {
    cfg.check(submitters.len())?;
    let accounts: Vec<Account> = (0..cfg.accounts)
        .map(|i| {
            let key = account_key::derive(cfg.seed, i as u64);
            let id = key.verifying_key().to_bytes();
            Account { key, id }
        })
        .collect();
    let pool: Vec<String> = accounts.iter().map(|a| hex::encode(a.id)).collect();
    let workers = submitters.len() * cfg.workers_per_submitter;
    // About 0.1 s of transactions queued per worker: the pacer, not the queues, holds the backlog.
    let capacity = ((cfg.rate / workers as f64 / 10.0).ceil() as usize).clamp(1, 64);
    let counters = Counters::default();

    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = crossbeam_channel::bounded::<usize>(capacity);
            senders.push(tx);
            let worker = Worker {
                cfg,
                submitter: &submitters[w % submitters.len()],
                accounts: &accounts,
                pool: &pool,
                counters: &counters,
                stop,
                rng: Prng::new(cfg.seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                nonces: HashMap::new(),
            };
            scope.spawn(move || worker.run(rx));
        }
        pace(cfg, clock, stop, &senders, &counters, &mut progress);
        drop(senders);
    });
    Ok(counters.stats(clock.now()))
}

/// The pacing loop: hands account indices to their workers on schedule.
fn pace(
    cfg: &LoadConfig,
    clock: &dyn Clock,
    stop: &AtomicBool,
    senders: &[crossbeam_channel::Sender<usize>],
    counters: &Counters,
    progress: &mut dyn FnMut(&LoadStats),
) {
    let mut pacer = Pacer::new(cfg.rate);
    let mut next_progress = cfg.progress_every;
    let mut account = 0usize;
    loop {
        let now = clock.now();
        if now >= cfg.duration {
            break; // behind schedule at the end: what is overdue is dropped, not sent late
        }
        let due = pacer.next_due(now);
        if due >= cfg.duration {
            wait_until(clock, cfg.duration, stop); // a run lasts `duration`
            break;
        }
        if !wait_until(clock, due, stop) {
            break;
        }
        if senders[account % senders.len()].send(account).is_err() {
            break; // the worker stopped: `stop` was set
        }
        account = (account + 1) % cfg.accounts;
        if clock.now() >= next_progress {
            progress(&counters.stats(clock.now()));
            next_progress += cfg.progress_every;
        }
    }
}

/// Sleeps until `t`, waking every 100 ms to notice `stop`; false when stopped.
fn wait_until(clock: &dyn Clock, t: Duration, stop: &AtomicBool) -> bool {
    let slice = Duration::from_millis(100);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = clock.now();
        if now >= t {
            return true;
        }
        clock.sleep_until(t.min(now + slice));
    }
}

/// Builds, signs and submits the transactions of its accounts.
struct Worker<'a, S> {
    cfg: &'a LoadConfig,
    submitter: &'a S,
    accounts: &'a [Account],
    pool: &'a [String],
    counters: &'a Counters,
    stop: &'a AtomicBool,
    rng: Prng,
    /// Next nonce per account index; absent means "ask the node".
    nonces: HashMap<usize, u64>,
}

impl<S: Submitter> Worker<'_, S> {
    fn run(mut self, rx: crossbeam_channel::Receiver<usize>) {
        for index in rx.iter() {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            self.send_one(index);
        }
    }

    fn send_one(&mut self, index: usize) {
        let account = &self.accounts[index];
        let c = self.counters;
        let nonce = match self.nonces.get(&index) {
            Some(&n) => n,
            None => match self.submitter.nonce(&account.id) {
                Ok(n) => n,
                Err(e) => return c.problem(&c.errors, format!("nonce query: {e:#}")),
            },
        };
        let body = TxBody {
            chain_id: self.cfg.chain_id.clone(),
            account: account.id,
            nonce,
            action: Action::Patch(typical_ops(&mut self.rng, index, self.pool)),
        };
        let tx = match Tx::sign(body, &account.key) {
            Ok(tx) => tx,
            Err(e) => return c.problem(&c.errors, format!("signing: {e}")),
        };
        c.sent.fetch_add(1, Ordering::Relaxed);
        match self.submitter.submit(tx.bytes()) {
            Ok(r) if r.code == code::OK => {
                c.accepted.fetch_add(1, Ordering::Relaxed);
                self.nonces.insert(index, nonce + 1);
            }
            Ok(r) => {
                if r.code == code::BAD_NONCE {
                    self.nonces.remove(&index);
                } else {
                    self.nonces.insert(index, nonce); // not applied: the nonce is still free
                }
                c.problem(&c.refused, format!("CheckTx code {}: {}", r.code, r.log));
            }
            Err(e) => {
                // The node may or may not have taken it: ask again next time.
                self.nonces.remove(&index);
                c.problem(&c.errors, format!("broadcast: {e:#}"));
            }
        }
    }
}

/// Typical Xian writes by account `pool[from]`: currency and token transfers,
/// allowances (nested keys), revocations (deletes), and the occasional
/// `__time__` / `__big_int__` value.
pub fn typical_ops(rng: &mut Prng, from: usize, pool: &[String]) -> Vec<Op> {
    let me = &pool[from];
    let to = if pool.len() > 1 {
        pool[(from + 1 + rng.index(pool.len() - 1)) % pool.len()].clone()
    } else {
        hex::encode(rng.bytes32()) // someone outside the pool
    };
    let token = rng.range(0, 8);
    match rng.range(0, 100) {
        0..=44 => vec![
            set(format!("currency.balances:{me}"), fixed(rng)),
            set(format!("currency.balances:{to}"), fixed(rng)),
        ],
        45..=64 => vec![
            set(format!("con_token_{token}.balances:{me}"), fixed(rng)),
            set(format!("con_token_{token}.balances:{to}"), fixed(rng)),
        ],
        65..=76 => vec![set(format!("con_token_{token}.allowances:{me}:{to}"), fixed(rng))],
        77..=84 => vec![Op::Delete {
            key: format!("con_token_{token}.allowances:{me}:{to}"),
        }],
        85..=92 => vec![
            set(
                format!("con_dao.votes:{}:{me}", rng.range(0, 16)),
                if rng.chance(7, 10) { "true" } else { "false" }.into(),
            ),
            set(format!("con_dao.last_vote:{me}"), time(rng)),
        ],
        _ => vec![
            set(format!("con_stake.shares:{me}"), big_int(rng)),
            set("con_stake.total_shares".into(), big_int(rng)),
        ],
    }
}

fn set(key: String, stored: String) -> Op {
    Op::Set { key, stored }
}

/// A node reached over CometBFT RPC.
pub struct RpcSubmitter(pub RpcClient);

impl Submitter for RpcSubmitter {
    fn nonce(&self, account: &[u8; 32]) -> anyhow::Result<u64> {
        fetch_nonce(&self.0, account)
    }

    fn submit(&self, tx: &[u8]) -> anyhow::Result<CheckResult> {
        let r = self.0.broadcast_tx_sync(tx)?;
        Ok(CheckResult {
            code: r.code,
            log: r.log,
        })
    }
}

/// The stored JSON text under `key` at the latest height, via ABCI query path
/// `/key` ([`QueryCode::Found`]: the value; [`QueryCode::NoValue`]: absent).
pub fn query_stored(rpc: &RpcClient, key: &str) -> anyhow::Result<Option<String>> {
    let r = rpc.abci_query("/key", key.as_bytes())?;
    match QueryCode::from_wire(r.code) {
        Some(QueryCode::Found) => String::from_utf8(r.value)
            .map(Some)
            .with_context(|| format!("query /key {key} on {}: the value is not UTF-8", rpc.url())),
        Some(QueryCode::NoValue) => Ok(None),
        _ => bail!(
            "query /key {key} on {} failed with code {}: {}",
            rpc.url(),
            r.code,
            r.log
        ),
    }
}

/// The account's next nonce, from its `__n.` key.
pub fn fetch_nonce(rpc: &RpcClient, account: &[u8; 32]) -> anyhow::Result<u64> {
    let key = nonce_key(account);
    let stored = query_stored(rpc, &key)?;
    parse_nonce(stored.as_deref()).with_context(|| format!("{key} on {}", rpc.url()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn pacer_spaces_transactions_evenly() {
        let mut p = Pacer::new(4.0);
        let due: Vec<Duration> = (0..5).map(|_| p.next_due(Duration::ZERO)).collect();
        assert_eq!(due, [0.0, 0.25, 0.5, 0.75, 1.0].map(secs));
        assert_eq!(p.skipped(), 0);
    }

    #[test]
    fn pacer_counts_rate_times_duration() {
        let mut p = Pacer::new(100.0);
        let mut now = Duration::ZERO;
        let mut issued = 0;
        loop {
            let due = p.next_due(now);
            if due >= secs(3.0) {
                break;
            }
            now = now.max(due);
            issued += 1;
        }
        assert_eq!(issued, 300);
    }

    #[test]
    fn pacer_bursts_at_most_one_second_after_a_stall() {
        let mut p = Pacer::new(10.0);
        assert_eq!(p.next_due(Duration::ZERO), Duration::ZERO);
        // Stalled for 5 s: only what is due within the last second may still go at once.
        let now = secs(5.0);
        let mut burst = 0;
        while p.next_due(now) <= now {
            burst += 1;
        }
        assert_eq!(burst, 11, "one second of transactions at 10/s, both ends included");
        assert_eq!(p.skipped(), 39);
    }

    #[test]
    fn typical_ops_are_valid_patches() {
        let keys: Vec<SigningKey> = (0..3).map(|i| account_key::derive(1, i)).collect();
        let pool: Vec<String> = keys
            .iter()
            .map(|k| account_key::account_hex(&k.verifying_key()))
            .collect();
        let mut rng = Prng::new(5);
        let (mut deletes, mut times, mut big_ints) = (0, 0, 0);
        for i in 0..2000 {
            let from = i % pool.len();
            let ops = typical_ops(&mut rng, from, &pool);
            assert!(ops.iter().any(|op| op.key().contains(&pool[from])), "{ops:?}");
            for op in &ops {
                match op {
                    Op::Set { stored, .. } if stored.contains("__time__") => times += 1,
                    Op::Set { stored, .. } if stored.contains("__big_int__") => big_ints += 1,
                    Op::Delete { .. } => deletes += 1,
                    Op::Set { .. } => {}
                }
            }
            let body = TxBody {
                chain_id: "c".into(),
                account: keys[from].verifying_key().to_bytes(),
                nonce: i as u64,
                action: Action::Patch(ops),
            };
            Tx::sign(body, &keys[from]).unwrap().validate("c").unwrap();
        }
        assert!(deletes > 0 && times > 0 && big_ints > 0, "{deletes} {times} {big_ints}");
    }

    #[test]
    fn a_one_account_pool_still_has_a_counterparty_key() {
        let pool = vec![hex::encode([1u8; 32])];
        let mut rng = Prng::new(1);
        for _ in 0..50 {
            assert!(!typical_ops(&mut rng, 0, &pool).is_empty());
        }
    }
}
