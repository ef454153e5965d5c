//! Storage of reports this thread wrote or read, kept for the next ones.
//!
//! A sending stream writes a source description with every sender report: a list of 31
//! descriptions (about 31 kB) and its CNAME's text, allocated per report and freed once
//! written. A peer's extended report is read into a list of blocks, freed once handled.
//! Keeping that storage in each session would cost every session 31 kB; a thread drives
//! its sessions one at a time, and a report is usually built and written in the same
//! turn of its session, so a few per thread serve them all (one that waits longer, as
//! when a packet is full, only makes the next report take new storage).

use std::cell::RefCell;

use super::{ReportBlock, ReportList, Sdes};

/// Lists of descriptions kept per thread.
const MAX_LISTS: usize = 4;
/// Texts kept per thread (a list holds one per stream of a session).
const MAX_TEXTS: usize = 16;
/// Block lists longer than this (a peer's unusual report) are not kept.
const MAX_BLOCKS: usize = 8;

thread_local! {
    static LISTS: RefCell<Vec<Box<ReportList<Sdes>>>> = const { RefCell::new(Vec::new()) };
    static TEXTS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static BLOCKS: RefCell<Option<Vec<ReportBlock>>> = const { RefCell::new(None) };
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

/// Keeps a written (or emptied) list of descriptions and its texts for later ones.
pub(crate) fn give_back_descriptions(mut list: Box<ReportList<Sdes>>) {
    for i in 0..31 {
        let Some(mut sdes) = list.take(i) else {
            continue;
        };
        for j in 0..31 {
            if let Some((_, mut t)) = sdes.values.take(j) {
                t.clear();
                TEXTS.with_borrow_mut(|texts| {
                    if texts.len() < MAX_TEXTS {
                        texts.push(t);
                    }
                });
            }
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
    BLOCKS.with_borrow_mut(|b| b.take()).unwrap_or_default()
}

/// Keeps a handled list of report blocks for the next report read.
pub(crate) fn give_back_blocks(mut blocks: Vec<ReportBlock>) {
    if blocks.capacity() == 0 || blocks.capacity() > MAX_BLOCKS {
        return;
    }
    blocks.clear();
    BLOCKS.with_borrow_mut(|b| *b = Some(blocks));
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
        b.reserve(2);
        b.push(ReportBlock::Dlrr(super::super::Dlrr { items: vec![] }));
        let at = b.as_ptr();
        give_back_blocks(b);
        let again = blocks();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at);
        give_back_blocks(Vec::with_capacity(100));
        assert_eq!(blocks().capacity(), 0, "a large list is not kept");
    }
}
