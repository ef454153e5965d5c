//! Storage of reports this thread wrote or read, kept for the next ones.
//!
//! A sending stream writes a source description with every sender report: a list of 31
//! descriptions (about 31 kB) and its CNAME's text, allocated per report and freed once
//! written. A peer's sender report comes with its own source descriptions, read into
//! the same kind of list and texts. A peer's extended report is read into a list of
//! blocks, and each DLRR block into a list of items, freed once handled.
//! Keeping that storage in each session would cost every session 31 kB; a thread drives
//! its sessions one at a time, and a report is usually built and written in the same
//! turn of its session, so a few per thread serve them all (one that waits longer, as
//! when a packet is full, only makes the next report take new storage).

use std::cell::RefCell;

use super::{DlrrItem, ReportBlock, ReportList, Sdes};

/// Lists of descriptions kept per thread.
const MAX_LISTS: usize = 4;
/// Texts kept per thread (a list holds one per stream of a session).
const MAX_TEXTS: usize = 16;
/// Block lists longer than this (a peer's unusual report) are not kept.
const MAX_BLOCKS: usize = 8;
/// Block lists kept per thread (a receive stream sends an RRTR with each receiver
/// report, and a session's streams report in the same turn).
const MAX_BLOCK_LISTS: usize = 4;
/// DLRR item lists longer than this (one item per stream we sent an RRTR for) are not kept.
const MAX_DLRR_ITEMS: usize = 64;
/// DLRR item lists kept per thread (an extended report may carry more than one block).
const MAX_DLRR_LISTS: usize = 4;

thread_local! {
    static LISTS: RefCell<Vec<Box<ReportList<Sdes>>>> = const { RefCell::new(Vec::new()) };
    static TEXTS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static BLOCKS: RefCell<Vec<Vec<ReportBlock>>> = const { RefCell::new(Vec::new()) };
    static DLRR_ITEMS: RefCell<Vec<Vec<DlrrItem>>> = const { RefCell::new(Vec::new()) };
}

/// An empty list of descriptions.
pub(crate) fn description_list() -> Box<ReportList<Sdes>> {
    LISTS
        .with_borrow_mut(|l| l.pop())
        .unwrap_or_else(|| Box::new(ReportList::new()))
}

/// `s`, in a kept text where there is one.
pub(crate) fn text(s: &str) -> String {
    let mut t = TEXTS.with_borrow_mut(|t| t.pop()).unwrap_or_default();
    t.push_str(s);
    t
}

/// Keeps a text that was read or written for later ones.
pub(crate) fn give_back_text(mut t: String) {
    if t.capacity() == 0 {
        return;
    }
    t.clear();
    TEXTS.with_borrow_mut(|texts| {
        if texts.len() < MAX_TEXTS {
            texts.push(t);
        }
    });
}

/// Keeps the texts of a handled description.
pub(crate) fn give_back_description(mut sdes: Sdes) {
    for j in 0..31 {
        if let Some((_, t)) = sdes.values.take(j) {
            give_back_text(t);
        }
    }
}

/// Keeps a written (or emptied) list of descriptions and its texts for later ones.
pub(crate) fn give_back_descriptions(mut list: Box<ReportList<Sdes>>) {
    for i in 0..31 {
        if let Some(sdes) = list.take(i) {
            give_back_description(sdes);
        }
    }
    LISTS.with_borrow_mut(|l| {
        if l.len() < MAX_LISTS {
            l.push(list);
        }
    });
}

/// An empty list of report blocks.
pub(crate) fn blocks() -> Vec<ReportBlock> {
    BLOCKS.with_borrow_mut(|b| b.pop()).unwrap_or_default()
}

/// Keeps a handled list of report blocks for the next report read.
pub(crate) fn give_back_blocks(mut blocks: Vec<ReportBlock>) {
    if blocks.capacity() == 0 || blocks.capacity() > MAX_BLOCKS {
        return;
    }
    blocks.clear();
    BLOCKS.with_borrow_mut(|b| {
        if b.len() < MAX_BLOCK_LISTS {
            b.push(blocks);
        }
    });
}

/// An empty list of DLRR items with room for `n` (at most [`MAX_DLRR_ITEMS`] reserved).
pub(crate) fn dlrr_items(n: usize) -> Vec<DlrrItem> {
    let mut items = DLRR_ITEMS
        .with_borrow_mut(|l| l.pop())
        .unwrap_or_default();
    items.reserve(n.min(MAX_DLRR_ITEMS));
    items
}

/// Keeps a handled list of DLRR items for the next one read.
pub(crate) fn give_back_dlrr_items(mut items: Vec<DlrrItem>) {
    if items.capacity() == 0 || items.capacity() > MAX_DLRR_ITEMS {
        return;
    }
    items.clear();
    DLRR_ITEMS.with_borrow_mut(|l| {
        if l.len() < MAX_DLRR_LISTS {
            l.push(items);
        }
    });
}

/// How many lists of descriptions, texts, block lists and DLRR item lists this thread
/// keeps.
#[cfg(test)]
pub(crate) fn kept() -> (usize, usize, usize, usize) {
    (
        LISTS.with_borrow(|l| l.len()),
        TEXTS.with_borrow(|t| t.len()),
        BLOCKS.with_borrow(|b| b.len()),
        DLRR_ITEMS.with_borrow(|l| l.len()),
    )
}

#[cfg(test)]
mod test {
    use super::super::{SdesType, Ssrc};
    use super::*;

    #[test]
    fn a_written_description_is_built_in_again() {
        let mut list = description_list();
        let mut sdes = Sdes {
            ssrc: Ssrc::from(1),
            values: ReportList::new(),
        };
        sdes.values.push((SdesType::CNAME, text("first-cname")));
        list.push(sdes);
        let at = &*list as *const ReportList<Sdes>;
        give_back_descriptions(list);
        assert_eq!((kept().0, kept().1), (1, 1), "the list and its text are kept");

        let again = description_list();
        assert_eq!(&*again as *const ReportList<Sdes>, at);
        assert!(again.is_empty());
        let t = text("second");
        assert_eq!(t, "second");
        assert!(t.capacity() >= "first-cname".len(), "the first text's storage");
    }

    #[test]
    fn blocks_are_kept_empty_and_small() {
        let mut b = blocks();
        b.reserve_exact(3);
        b.push(ReportBlock::Dlrr(super::super::Dlrr { items: vec![] }));
        give_back_blocks(b);
        assert_eq!(kept().2, 1);
        let again = blocks();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), 3, "the kept list");
        give_back_blocks(Vec::with_capacity(100));
        assert_eq!(kept().2, 0, "a large list is not kept");
        for _ in 0..MAX_BLOCK_LISTS + 2 {
            give_back_blocks(Vec::with_capacity(2));
        }
        assert_eq!(kept().2, MAX_BLOCK_LISTS, "a few are kept");
    }

    #[test]
    fn dlrr_item_lists_are_kept_small() {
        let mut items = dlrr_items(3);
        items.reserve_exact(7);
        items.push(DlrrItem {
            ssrc: Ssrc::from(1),
            last_rr_time: 0,
            last_rr_delay: 0,
        });
        let capacity = items.capacity();
        give_back_dlrr_items(items);
        assert_eq!(kept().3, 1);
        let again = dlrr_items(1);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity, "the kept list");
        give_back_dlrr_items(Vec::with_capacity(MAX_DLRR_ITEMS + 1));
        assert_eq!(kept().3, 0, "a large list is not kept");
    }

}
