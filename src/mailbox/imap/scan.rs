//! What the IMAP adapter remembers between looks, and the arithmetic of a bounded look: pure,
//! no sockets.
//!
//! Per folder the memory holds the UIDVALIDITY and the highest UID already looked at. UIDs
//! only grow within one UIDVALIDITY (RFC 3501 §2.3.1.1), so every mail above that UID is new
//! and every mail at or below it was read (or is gone). A look searches the UIDs above it in
//! windows of at most [`SEARCH_SPAN`] UIDs, never beyond the UIDNEXT the SELECT reported, and
//! fetches what it finds in chunks of at most [`FETCH_CHUNK`] mails; a folder gets at most
//! [`COMMANDS_PER_FOLDER`] searches and fetches per look, the rest waits for the next look.

use std::collections::{BTreeMap, BTreeSet};

use crate::mailbox::Mark;

/// UIDs per `UID FETCH`.
pub const FETCH_CHUNK: usize = 200;
/// Width of one `UID SEARCH UID lo:hi` window: bounds the size of its answer.
pub const SEARCH_SPAN: u32 = 20_000;
/// Searches plus fetches per folder and look; with the endpoint timeout on each, a bound on the
/// time one look can take.
pub const COMMANDS_PER_FOLDER: usize = 64;
/// Bytes of the `X-Mailcanary` and `Received` header fields read per mail.
pub const HEADER_BYTES: usize = 64 * 1024;

/// First line of the serialised memory; anything else is not ours.
const MAGIC: &str = "mailcanary-imap-scan 1";

/// How far one folder has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The folder's UIDVALIDITY when it was read.
    pub validity: u32,
    /// Every UID up to this one has been looked at (0: none).
    pub seen: u32,
}

/// Progress per folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanMemory {
    folders: BTreeMap<String, Progress>,
}

impl ScanMemory {
    /// The highest UID looked at in `folder` under `validity`; 0 (read from the start) when
    /// the folder is new or its UIDVALIDITY changed, since old UIDs then mean nothing.
    pub fn seen(&self, folder: &str, validity: u32) -> u32 {
        match self.folders.get(folder) {
            Some(p) if p.validity == validity => p.seen,
            _ => 0,
        }
    }

    /// The remembered progress of `folder`, if any.
    pub fn get(&self, folder: &str) -> Option<Progress> {
        self.folders.get(folder).copied()
    }

    /// Records that `folder` has been read up to `seen` under `validity`. Never goes back
    /// within one UIDVALIDITY.
    pub fn advance(&mut self, folder: &str, validity: u32, seen: u32) {
        let seen = seen.max(self.seen(folder, validity));
        self.folders
            .insert(folder.to_string(), Progress { validity, seen });
    }

    /// The text form, for the folders still configured: a header line, then
    /// `VALIDITY SEEN FOLDER` per folder (the folder last, so it may contain spaces). A
    /// folder whose name holds a line break is not written (it is read again after a
    /// restart, which costs time but loses nothing).
    pub fn to_text(&self, folders: &[String]) -> String {
        let mut out = String::from(MAGIC);
        for (name, p) in &self.folders {
            if folders.contains(name) && !name.contains(['\n', '\r']) {
                out.push_str(&format!("\n{} {} {name}", p.validity, p.seen));
            }
        }
        out
    }

    /// Reads [`ScanMemory::to_text`]'s form; `None` for anything else, in which case the
    /// caller starts over.
    pub fn parse(text: &str) -> Option<ScanMemory> {
        let mut lines = text.split('\n');
        if lines.next()? != MAGIC {
            return None;
        }
        let mut folders = BTreeMap::new();
        for line in lines {
            let mut parts = line.splitn(3, ' ');
            let validity = parts.next()?.parse().ok()?;
            let seen = parts.next()?.parse().ok()?;
            let name = parts.next().filter(|n| !n.is_empty())?;
            if folders
                .insert(name.to_string(), Progress { validity, seen })
                .is_some()
            {
                return None;
            }
        }
        Some(ScanMemory { folders })
    }
}

/// The next UIDs to search after `seen`: `(lo, Some(hi))` for `UID lo:hi`, or `(lo, None)`
/// for `UID lo:*` when the server did not say its UIDNEXT. `None` when nothing can be newer
/// than `seen`.
pub fn search_window(seen: u32, uid_next: Option<u32>) -> Option<(u32, Option<u32>)> {
    let lo = seen.checked_add(1)?;
    match uid_next {
        Some(next) if lo >= next => None,
        Some(next) => Some((lo, Some(lo.saturating_add(SEARCH_SPAN - 1).min(next - 1)))),
        None => Some((lo, None)),
    }
}

/// Whether the window ending at `hi` lies wholly below the newest UIDs (it was cut at
/// [`SEARCH_SPAN`]), so that a UID in it the search did not find is gone for good and the scan
/// may move past it. The newest window (ending at UIDNEXT − 1, or open) is never skipped that
/// way: UIDNEXT can already count a mail that the session cannot see yet — Dovecot reports a
/// UIDNEXT that includes a mail being delivered that very moment — and skipping it would lose
/// that canary for good. There the scan moves only as far as the mails it read.
pub fn below_newest(hi: Option<u32>, uid_next: Option<u32>) -> bool {
    match (hi, uid_next) {
        (Some(hi), Some(next)) => hi.saturating_add(1) < next,
        _ => false,
    }
}

/// The end of the window `lo..=hi` when it is the newest (it ends at UIDNEXT − 1) and spans
/// at most [`FETCH_CHUNK`] UIDs: then it may be fetched by its range without a search.
pub fn small_newest(lo: u32, hi: Option<u32>, uid_next: Option<u32>) -> Option<u32> {
    let hi = hi?;
    let newest = !below_newest(Some(hi), uid_next);
    (newest && hi >= lo && hi - lo < FETCH_CHUNK as u32).then_some(hi)
}

/// The UIDs in `lo..=hi` that a fetch of that range answered for, sorted: the mails that
/// exist there (a server answers nothing for UIDs it has not assigned or has expunged).
pub fn answered(fetched: &[Fetched], lo: u32, hi: u32) -> Vec<u32> {
    let set: BTreeSet<u32> = fetched
        .iter()
        .filter_map(|f| f.uid)
        .filter(|u| (lo..=hi).contains(u))
        .collect();
    set.into_iter().collect()
}

/// The `UID SEARCH` criteria of a window.
pub fn search_query(lo: u32, hi: Option<u32>) -> String {
    match hi {
        Some(hi) => format!("UID {lo}:{hi}"),
        None => format!("UID {lo}:*"),
    }
}

/// The UIDs of a search answer that lie in the window, sorted. A server answers `n:*` with
/// the last mail even when `n` is above every UID, so what lies outside is dropped.
pub fn in_window(found: impl IntoIterator<Item = u32>, lo: u32, hi: Option<u32>) -> Vec<u32> {
    let hi = hi.unwrap_or(u32::MAX);
    let mut uids: Vec<u32> = found
        .into_iter()
        .filter(|u| (lo..=hi).contains(u))
        .collect();
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// Splits sorted UIDs into chunks of at most `size`, each fetched as the range from its first
/// to its last UID: UIDs in between that the search did not name are gone and cannot come
/// back, so the command line stays short however sparse the UIDs are.
pub fn chunks(sorted: &[u32], size: usize) -> impl Iterator<Item = &[u32]> {
    sorted.chunks(size.max(1))
}

/// The `UID FETCH` sequence set of a chunk.
pub fn range(chunk: &[u32]) -> String {
    match (chunk.first(), chunk.last()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}:{b}"),
        _ => String::new(),
    }
}

/// The data items fetched per mail: the header fields the probe needs (the canary's, the
/// `Received:` chain, what tells a bounce, and what the receiving side wrote about it) and the start of the body (for the token a
/// header-stripping gateway leaves, or a bounce's report), each bounded in bytes, and the
/// server's arrival time. `BODY.PEEK`, so nothing is marked seen.
pub fn fetch_items() -> String {
    format!(
        "(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS ({} Received Content-Type From Subject {})]\
         <0.{HEADER_BYTES}> BODY.PEEK[TEXT]<0.{}>)",
        crate::canary::HEADER_NAME,
        crate::verdict::FIELDS.join(" "),
        crate::mailbox::BODY_WINDOW
    )
}

/// One mail's FETCH answer, as far as the look needs it.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Its UID; answers without one (or outside the chunk asked for) are unsolicited updates.
    pub uid: Option<u32>,
    /// The `X-Mailcanary` and `Received` fields, at most [`HEADER_BYTES`].
    pub header: Option<Vec<u8>>,
    /// The start of the body, at most [`crate::mailbox::BODY_WINDOW`].
    pub text: Option<Vec<u8>>,
    /// INTERNALDATE, Unix ms.
    pub server_ms: Option<u64>,
}

/// A mail of a chunk that carries a canary mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// Its UID.
    pub uid: u32,
    /// The canary header, or the body token where the header was stripped.
    pub mark: Mark,
    /// The fetched header fields (its `Received:` lines).
    pub head: Vec<u8>,
    /// INTERNALDATE, Unix ms.
    pub server_ms: Option<u64>,
}

/// Sorts a chunk's FETCH answers: the mails that carry a canary mark, and how many mails of
/// the chunk answered without their header fields (unreadable: skipped, counted once). Mails
/// of the chunk that did not answer at all were expunged meanwhile, which is no fault.
pub fn sort_out(chunk: &[u32], fetched: Vec<Fetched>) -> (Vec<Marked>, u64) {
    let mut read = BTreeSet::new();
    let mut unread = BTreeSet::new();
    let mut marked = Vec::new();
    for f in fetched {
        let Some(uid) = f.uid.filter(|u| chunk.binary_search(u).is_ok()) else {
            continue;
        };
        let Some(head) = f.header else {
            unread.insert(uid);
            continue;
        };
        if !read.insert(uid) {
            continue;
        }
        if let Some(mark) = Mark::find(&head, f.text.as_deref().unwrap_or_default()) {
            marked.push(Marked {
                uid,
                mark,
                head,
                server_ms: f.server_ms,
            });
        }
    }
    let skipped = unread.difference(&read).count() as u64;
    (marked, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::{Canary, SigningKey};

    fn memory(entries: &[(&str, u32, u32)]) -> ScanMemory {
        let mut m = ScanMemory::default();
        for (folder, validity, seen) in entries {
            m.advance(folder, *validity, *seen);
        }
        m
    }

    fn names(folders: &[&str]) -> Vec<String> {
        folders.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn only_a_small_newest_window_is_fetched_by_its_range() {
        // Woken by IDLE: one or two new UIDs below UIDNEXT.
        assert_eq!(small_newest(8, Some(9), Some(10)), Some(9));
        assert_eq!(small_newest(8, Some(8), Some(9)), Some(8));
        let wide = 8 + FETCH_CHUNK as u32;
        assert_eq!(small_newest(8, Some(wide - 1), Some(wide)), Some(wide - 1));
        // Wider than a chunk, cut below the newest, or open-ended: searched first.
        assert_eq!(small_newest(8, Some(wide), Some(wide + 1)), None);
        assert_eq!(small_newest(8, Some(9), Some(20)), None);
        assert_eq!(small_newest(8, None, None), None);
    }

    #[test]
    fn a_range_fetch_names_the_mails_that_exist_there() {
        let answer = |uid| Fetched {
            uid,
            ..Fetched::default()
        };
        let fetched = [
            answer(Some(9)),
            answer(None),
            answer(Some(7)),
            answer(Some(3)),
            answer(Some(9)),
        ];
        assert_eq!(
            answered(&fetched, 5, 9),
            [7, 9],
            "unsolicited and outside: not named"
        );
        assert!(answered(&[], 5, 9).is_empty());
    }

    #[test]
    fn memory_round_trips() {
        let m = memory(&[("INBOX", 1_700_000_000, 42), ("Junk mail", 7, 0)]);
        let text = m.to_text(&names(&["INBOX", "Junk mail"]));
        assert_eq!(
            text,
            "mailcanary-imap-scan 1\n1700000000 42 INBOX\n7 0 Junk mail"
        );
        assert_eq!(ScanMemory::parse(&text), Some(m));
    }

    #[test]
    fn empty_memory_round_trips() {
        let m = ScanMemory::default();
        assert_eq!(ScanMemory::parse(&m.to_text(&[])), Some(m));
    }

    #[test]
    fn memory_keeps_only_configured_folders() {
        let m = memory(&[("INBOX", 1, 5), ("Old", 1, 9), ("Bad\nName", 1, 3)]);
        let text = m.to_text(&names(&["INBOX", "Bad\nName"]));
        assert_eq!(text, "mailcanary-imap-scan 1\n1 5 INBOX");
    }

    #[test]
    fn garbage_memory_is_refused() {
        for bad in [
            "",
            "garbage",
            "mailcanary-imap-scan 2\n1 5 INBOX",
            "mailcanary-imap-scan 1\n",
            "mailcanary-imap-scan 1\n1 5",
            "mailcanary-imap-scan 1\n1 5 ",
            "mailcanary-imap-scan 1\nx 5 INBOX",
            "mailcanary-imap-scan 1\n1 -5 INBOX",
            "mailcanary-imap-scan 1\n1 4294967296 INBOX",
            "mailcanary-imap-scan 1\n1 5 INBOX\n1 6 INBOX",
            "{\"INBOX\": [1, 5]}",
        ] {
            assert_eq!(ScanMemory::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_changed_uidvalidity_reads_the_folder_again() {
        let mut m = memory(&[("INBOX", 10, 500)]);
        assert_eq!(m.seen("INBOX", 10), 500);
        assert_eq!(m.seen("INBOX", 11), 0);
        assert_eq!(m.seen("Junk", 10), 0);
        m.advance("INBOX", 11, 3);
        assert_eq!(
            m.get("INBOX"),
            Some(Progress {
                validity: 11,
                seen: 3
            })
        );
    }

    #[test]
    fn memory_never_goes_back() {
        let mut m = memory(&[("INBOX", 10, 500)]);
        m.advance("INBOX", 10, 20);
        assert_eq!(m.seen("INBOX", 10), 500);
        m.advance("INBOX", 10, 501);
        assert_eq!(m.seen("INBOX", 10), 501);
    }

    #[test]
    fn nothing_to_search_once_caught_up() {
        assert_eq!(search_window(0, Some(1)), None);
        assert_eq!(search_window(99, Some(100)), None);
        assert_eq!(search_window(150, Some(100)), None);
        assert_eq!(search_window(u32::MAX, None), None);
    }

    #[test]
    fn windows_stop_below_uidnext_and_span_at_most_search_span() {
        assert_eq!(search_window(0, Some(2)), Some((1, Some(1))));
        assert_eq!(search_window(99, Some(150)), Some((100, Some(149))));
        assert_eq!(
            search_window(0, Some(1_000_000)),
            Some((1, Some(SEARCH_SPAN)))
        );
        assert_eq!(
            search_window(u32::MAX - 5, Some(u32::MAX)),
            Some((u32::MAX - 4, Some(u32::MAX - 1)))
        );
        assert_eq!(search_window(7, None), Some((8, None)));
    }

    #[test]
    fn only_windows_below_the_newest_uids_are_skipped_past() {
        // Cut at SEARCH_SPAN: everything up to its end was searched and what is missing is gone.
        let (lo, hi) = search_window(0, Some(1_000_000)).unwrap();
        assert!(below_newest(hi, Some(1_000_000)), "{lo}..{hi:?}");
        // The newest window: a UID the search did not find may still be on its way in.
        let (_, hi) = search_window(99, Some(150)).unwrap();
        assert!(!below_newest(hi, Some(150)));
        assert!(!below_newest(None, None));
        assert!(!below_newest(Some(7), None));
        assert_eq!(search_query(8, None), "UID 8:*");
        assert_eq!(search_query(1, Some(20_000)), "UID 1:20000");
    }

    #[test]
    fn search_answers_outside_the_window_are_dropped() {
        // `UID 101:*` answered with the last mail, 100, though nothing is newer.
        assert_eq!(in_window([100], 101, None), Vec::<u32>::new());
        assert_eq!(
            in_window([105, 101, 300, 101, 99], 101, Some(200)),
            [101, 105]
        );
        assert_eq!(in_window([5, u32::MAX], 5, None), [5, u32::MAX]);
    }

    #[test]
    fn chunks_are_bounded_and_fetched_as_ranges() {
        let uids: Vec<u32> = (1..=450).map(|n| n * 3).collect();
        let parts: Vec<&[u32]> = chunks(&uids, FETCH_CHUNK).collect();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|c| c.len() <= FETCH_CHUNK));
        assert_eq!(range(parts[0]), "3:600");
        assert_eq!(range(parts[2]), "1203:1350");
        assert_eq!(range(&[7]), "7");
        assert_eq!(range(&[]), "");
        assert_eq!(chunks(&[], FETCH_CHUNK).count(), 0);
    }

    #[test]
    fn fetch_items_are_bounded_in_bytes() {
        assert_eq!(
            fetch_items(),
            "(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS (X-Mailcanary Received Content-Type From \
             Subject Authentication-Results X-Spamd-Result X-Rspamd-Score X-Rspamd-Server \
             X-Rspamd-Action X-Rspamd-Queue-Id X-Spam X-Rspamd-Pre-Result X-Spam-Flag \
             X-Spam-Status X-Spam-Level X-Spam-Report X-Spam-Checker-Version X-Spam-Score \
             X-MS-Exchange-Organization-SCL X-Forefront-Antispam-Report)]<0.65536> \
             BODY.PEEK[TEXT]<0.16384>)"
        );
    }

    fn answer(uid: Option<u32>, header: Option<&str>, text: Option<&str>) -> Fetched {
        Fetched {
            uid,
            header: header.map(|h| h.as_bytes().to_vec()),
            text: text.map(|t| t.as_bytes().to_vec()),
            server_ms: Some(1),
        }
    }

    #[test]
    fn answers_are_sorted_into_marked_plain_and_unreadable() {
        let head = "Received: from a by b; Sat, 28 Nov 2026 13:02:07 +0000\r\n\
                    X-Mailcanary: v=1; id=x\r\n\r\n";
        let key = SigningKey::new(b"key".to_vec()).unwrap();
        let canary = Canary {
            id: "01JDQ8ZK3V6R9X1T2Y3Z4A5B6C".into(),
            probe: "p".into(),
            class: "bulk".into(),
            seq: 1,
            sent_ms: 1,
            agent: "a".into(),
        };
        let token = format!("Hello,\r\n{}\r\n", canary.body_token(&key));
        let (marked, skipped) = sort_out(
            &[3, 5, 7, 9, 11],
            vec![
                answer(Some(3), Some(head), Some("body")),
                answer(Some(5), Some("\r\n"), Some(&token)),
                answer(Some(7), Some("Received: x\r\n\r\n"), None),
                answer(Some(9), None, Some("body")),
                // 11 did not answer: expunged meanwhile, not a fault.
                // Unsolicited updates: no UID, or one outside the chunk.
                answer(None, None, None),
                answer(Some(4), None, None),
                answer(Some(12), Some(head), None),
            ],
        );
        assert_eq!(skipped, 1);
        let uids: Vec<u32> = marked.iter().map(|m| m.uid).collect();
        assert_eq!(uids, [3, 5]);
        assert_eq!(marked[0].mark, Mark::Header("v=1; id=x".into()));
        assert_eq!(marked[0].head, head.as_bytes());
        assert_eq!(marked[1].mark, Mark::BodyToken(canary.header_value(&key)));
    }

    #[test]
    fn a_flag_update_beside_the_real_answer_is_not_a_skip() {
        let (marked, skipped) = sort_out(
            &[3],
            vec![
                answer(Some(3), None, None),
                answer(Some(3), Some("X-Mailcanary: v=1\r\n\r\n"), None),
                answer(Some(3), Some("X-Mailcanary: v=1\r\n\r\n"), None),
            ],
        );
        assert_eq!((marked.len(), skipped), (1, 0));
    }
}
