use super::list::IterOwned;
use super::{AppSpecificFeedback, DlrrItem, FirEntry, NackEntry, ReceptionReport, Remb};
use super::{ReportBlock, ReportList, Rrtr, Rtcp, Sdes, SenderInfo, Ssrc, Twcc};

/// Normalization of [`Rtcp`] so we can deal with one SSRC at a time.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RtcpFb {
    SenderInfo(SenderInfo),                   // tx -> rx
    ReceptionReport(ReceptionReport),         // rx -> tx
    DlrrItem(DlrrItem),                       // rx <- tx
    Rrtr((Rrtr, Ssrc)),                       // rx -> tx
    SourceDescription(Sdes),                  // tx -> rx
    Goodbye(Ssrc),                            // tx -> rx
    Nack(Ssrc, ReportList<NackEntry>),        // rx -> tx
    Pli(Ssrc),                                // rx -> tx
    Fir(FirEntry),                            // rx -> tx
    Twcc(Twcc),                               // rx -> tx
    Remb(Remb),                               // rx -> tx
    AppSpecificFeedback(AppSpecificFeedback), // not stream-routed
}

impl RtcpFb {
    pub fn is_for_rx(&self) -> bool {
        matches!(
            self,
            RtcpFb::SenderInfo(_)
                | RtcpFb::SourceDescription(_)
                | RtcpFb::Goodbye(_)
                | RtcpFb::DlrrItem(_)
        )
    }

    /// Expand RTCP packets into per-SSRC feedback, lazily: a compound packet is walked
    /// as the caller consumes it, so handling feedback allocates nothing here.
    pub fn from_rtcp<T: IntoIterator<Item = Rtcp>>(t: T) -> impl Iterator<Item = RtcpFb> {
        t.into_iter().flat_map(Expanded::from)
    }

    pub fn ssrc(&self) -> Ssrc {
        match self {
            RtcpFb::SenderInfo(v) => v.ssrc,
            RtcpFb::ReceptionReport(v) => v.ssrc,
            RtcpFb::DlrrItem(v) => v.ssrc,
            RtcpFb::Rrtr((_, ssrc)) => *ssrc,
            RtcpFb::SourceDescription(v) => v.ssrc,
            RtcpFb::Goodbye(v) => *v,
            RtcpFb::Nack(v, _) => *v,
            RtcpFb::Pli(v) => *v,
            RtcpFb::Fir(v) => v.ssrc,
            RtcpFb::Twcc(v) => v.ssrc,
            RtcpFb::Remb(v) => v.ssrcs.first().map(|ssrc| (*ssrc).into()).unwrap_or(v.ssrc),
            RtcpFb::AppSpecificFeedback(v) => v.media_ssrc,
        }
    }
}

/// The feedback items one [`Rtcp`] expands to, in the order they appear in it.
enum Expanded {
    One(Option<RtcpFb>),
    SenderReport(Option<SenderInfo>, IterOwned<ReceptionReport>),
    Reports(IterOwned<ReceptionReport>),
    Extended {
        ssrc: Ssrc,
        /// In reverse order, taken from the end; given back (`spare`) once empty.
        blocks: Vec<ReportBlock>,
        /// The current DLRR block's items, likewise.
        dlrr: Vec<DlrrItem>,
    },
    // Boxed as in `Descriptions`: a list of 31 descriptions is ~30 kB. Given back
    // (`spare`) once empty.
    Descriptions(Option<Box<ReportList<Sdes>>>, usize),
    Goodbye(IterOwned<Ssrc>),
    Fir(IterOwned<FirEntry>),
}

impl From<Rtcp> for Expanded {
    fn from(pkt: Rtcp) -> Self {
        match pkt {
            Rtcp::SenderReport(v) => {
                Expanded::SenderReport(Some(v.sender_info), v.reports.into_iter())
            }
            Rtcp::ReceiverReport(v) => Expanded::Reports(v.reports.into_iter()),
            Rtcp::ExtendedReport(mut v) => {
                v.blocks.reverse();
                Expanded::Extended {
                    ssrc: v.ssrc,
                    blocks: v.blocks,
                    dlrr: Vec::new(),
                }
            }
            Rtcp::SourceDescription(v) => Expanded::Descriptions(Some(v.reports), 0),
            Rtcp::Goodbye(v) => Expanded::Goodbye(v.reports.into_iter()),
            Rtcp::Nack(v) => Expanded::One(Some(RtcpFb::Nack(v.ssrc, v.reports))),
            Rtcp::Pli(v) => Expanded::One(Some(RtcpFb::Pli(v.ssrc))),
            Rtcp::Fir(v) => Expanded::Fir(v.reports.into_iter()),
            Rtcp::Twcc(v) => Expanded::One(Some(RtcpFb::Twcc(v))),
            Rtcp::Remb(v) => Expanded::One(Some(RtcpFb::Remb(v))),
            Rtcp::AppSpecificFeedback(v) => Expanded::One(Some(RtcpFb::AppSpecificFeedback(v))),
        }
    }
}

impl Iterator for Expanded {
    type Item = RtcpFb;

    fn next(&mut self) -> Option<RtcpFb> {
        match self {
            Expanded::One(v) => v.take(),
            Expanded::SenderReport(info, reports) => info
                .take()
                .map(RtcpFb::SenderInfo)
                .or_else(|| reports.next().map(RtcpFb::ReceptionReport)),
            Expanded::Reports(reports) => reports.next().map(RtcpFb::ReceptionReport),
            Expanded::Extended { ssrc, blocks, dlrr } => loop {
                if let Some(item) = dlrr.pop() {
                    return Some(RtcpFb::DlrrItem(item));
                }
                super::spare::give_back_dlrr_items(std::mem::take(dlrr));
                let Some(block) = blocks.pop() else {
                    super::spare::give_back_blocks(std::mem::take(blocks));
                    return None;
                };
                match block {
                    ReportBlock::Rrtr(b) => return Some(RtcpFb::Rrtr((b, *ssrc))),
                    ReportBlock::Dlrr(d) => {
                        *dlrr = d.items;
                        dlrr.reverse();
                    }
                }
            },
            Expanded::Descriptions(list, index) => {
                let sdes = list.as_mut()?.take(*index);
                if sdes.is_none() {
                    // A list is filled from its start, so the first gap is its end.
                    if let Some(list) = list.take() {
                        super::spare::give_back_descriptions(list);
                    }
                }
                *index += 1;
                Some(RtcpFb::SourceDescription(sdes?))
            }
            Expanded::Goodbye(ssrcs) => ssrcs.next().map(RtcpFb::Goodbye),
            Expanded::Fir(entries) => entries.next().map(RtcpFb::Fir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::AppSpecificFeedback;
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn compound_expands_in_order() {
        use super::super::{Descriptions, Dlrr, ExtendedReport, Fir, Goodbye, Pli, ReceiverReport};
        use super::super::{SdesType, SenderReport};
        use crate::rtp_::MediaTime;
        use std::time::SystemTime;

        let report = |ssrc: u32| ReceptionReport {
            ssrc: ssrc.into(),
            fraction_lost: 0,
            packets_lost: 0,
            max_seq: 1,
            jitter: 0,
            last_sr_time: 0,
            last_sr_delay: 0,
        };
        let list = |items: Vec<ReceptionReport>| {
            let mut l = ReportList::new();
            items.into_iter().for_each(|i| l.push(i));
            l
        };
        let now = SystemTime::now();
        let dlrr = |ssrc: u32| DlrrItem {
            ssrc: ssrc.into(),
            last_rr_time: 0,
            last_rr_delay: 0,
        };
        let mut descriptions = ReportList::new();
        for ssrc in [7_u32, 8] {
            let mut values = ReportList::new();
            values.push((SdesType::CNAME, "cname".to_string()));
            descriptions.push(Sdes {
                ssrc: ssrc.into(),
                values,
            });
        }
        let mut goodbye = ReportList::new();
        goodbye.push(11.into());
        goodbye.push(12.into());

        let compound = vec![
            Rtcp::SenderReport(SenderReport {
                sender_info: SenderInfo {
                    ssrc: 1.into(),
                    ntp_time: now,
                    rtp_time: MediaTime::from_secs(1),
                    sender_packet_count: 0,
                    sender_octet_count: 0,
                },
                reports: list(vec![report(2), report(3)]),
            }),
            Rtcp::ReceiverReport(ReceiverReport {
                sender_ssrc: 1.into(),
                reports: list(vec![report(4)]),
            }),
            Rtcp::ExtendedReport(ExtendedReport {
                ssrc: 5.into(),
                blocks: vec![
                    ReportBlock::Dlrr(Dlrr {
                        items: vec![dlrr(20), dlrr(21)],
                    }),
                    ReportBlock::Rrtr(Rrtr { ntp_time: now }),
                    ReportBlock::Dlrr(Dlrr { items: vec![] }),
                    ReportBlock::Dlrr(Dlrr {
                        items: vec![dlrr(22)],
                    }),
                ],
            }),
            Rtcp::SourceDescription(Descriptions {
                reports: Box::new(descriptions),
            }),
            Rtcp::Goodbye(Goodbye { reports: goodbye }),
            Rtcp::Pli(Pli {
                sender_ssrc: 1.into(),
                ssrc: 13.into(),
            }),
            Rtcp::Fir(Fir {
                sender_ssrc: 1.into(),
                reports: FirEntry {
                    ssrc: 14.into(),
                    seq_no: 1,
                }
                .into(),
            }),
        ];

        let expanded: Vec<String> = RtcpFb::from_rtcp(compound)
            .map(|fb| {
                let kind = match &fb {
                    RtcpFb::SenderInfo(_) => "sr",
                    RtcpFb::ReceptionReport(_) => "rr",
                    RtcpFb::DlrrItem(_) => "dlrr",
                    RtcpFb::Rrtr(_) => "rrtr",
                    RtcpFb::SourceDescription(_) => "sdes",
                    RtcpFb::Goodbye(_) => "bye",
                    RtcpFb::Pli(_) => "pli",
                    RtcpFb::Fir(_) => "fir",
                    _ => "other",
                };
                format!("{kind}:{}", *fb.ssrc())
            })
            .collect();

        assert_eq!(
            expanded,
            [
                "sr:1", "rr:2", "rr:3", "rr:4", "dlrr:20", "dlrr:21", "rrtr:5", "dlrr:22",
                "sdes:7", "sdes:8", "bye:11", "bye:12", "pli:13", "fir:14"
            ]
        );
    }

    #[test]
    fn read_lists_go_back_to_the_threads_storage_once_expanded() {
        use super::super::{Descriptions, Dlrr, ExtendedReport, SdesType, spare};

        let mut reports = spare::description_list();
        let mut values = ReportList::new();
        values.push((SdesType::CNAME, spare::text("cname")));
        reports.push(Sdes {
            ssrc: 7.into(),
            values,
        });
        let list_at = &*reports as *const ReportList<Sdes>;
        let mut items = spare::dlrr_items(2);
        items.push(DlrrItem {
            ssrc: 20.into(),
            last_rr_time: 0,
            last_rr_delay: 0,
        });
        let items_at = items.as_ptr();
        let compound = vec![
            Rtcp::ExtendedReport(ExtendedReport {
                ssrc: 5.into(),
                blocks: vec![ReportBlock::Dlrr(Dlrr { items })],
            }),
            Rtcp::SourceDescription(Descriptions { reports }),
        ];

        for fb in RtcpFb::from_rtcp(compound) {
            if let RtcpFb::SourceDescription(sdes) = fb {
                spare::give_back_description(sdes);
            }
        }

        let (lists, texts, _, item_lists) = spare::kept();
        assert_eq!((lists, texts, item_lists), (1, 1, 1), "all given back");
        let list = spare::description_list();
        assert_eq!(&*list as *const ReportList<Sdes>, list_at);
        assert!(list.is_empty());
        let items = spare::dlrr_items(1);
        assert_eq!(items.as_ptr(), items_at);
        assert!(items.is_empty());
    }

    #[test]
    fn app_specific_feedback_passes_through_rtcpfb() {
        let fb = AppSpecificFeedback {
            sender_ssrc: 100.into(),
            media_ssrc: 200.into(),
            payload: vec![0xDE, 0xAD, 0xBE, 0xEF].into(),
        };

        let rtcp_items = vec![Rtcp::AppSpecificFeedback(fb)];
        let result: Vec<_> = RtcpFb::from_rtcp(rtcp_items).collect();

        assert_eq!(result.len(), 1);
        assert!(matches!(&result[0], RtcpFb::AppSpecificFeedback(v) if v.media_ssrc == 200.into()));
    }

    #[test]
    fn app_specific_feedback_write_and_parse_round_trip() {
        use crate::rtp_::RtcpPacket;

        let fb = AppSpecificFeedback {
            sender_ssrc: 1001.into(),
            media_ssrc: 2002.into(),
            payload: vec![0x01, 0x00, 0x00, 0x44, 0xAA, 0xBB, 0xCC, 0xDD].into(),
        };

        // Write the RTCP packet
        let rtcp = Rtcp::AppSpecificFeedback(fb.clone());
        let mut buf = [0u8; 256];
        let written = rtcp.write_to(&mut buf);

        // Parse it back via the Rtcp parser
        let mut parsed = VecDeque::new();
        Rtcp::read_packet(&buf[..written], &mut parsed, &mut None);

        assert_eq!(parsed.len(), 1);
        match parsed.pop_front().unwrap() {
            Rtcp::AppSpecificFeedback(parsed_fb) => {
                assert_eq!(parsed_fb.sender_ssrc, fb.sender_ssrc);
                assert_eq!(parsed_fb.media_ssrc, fb.media_ssrc);
                assert_eq!(parsed_fb.payload, fb.payload);
            }
            _ => panic!("Expected AppSpecificFeedback"),
        }
    }

    #[test]
    fn app_specific_feedback_not_confused_with_remb() {
        use crate::rtp_::RtcpPacket;

        // A non-REMB FMT=15 payload should parse as AppSpecificFeedback, not Remb
        let fb = AppSpecificFeedback {
            sender_ssrc: 42.into(),
            media_ssrc: 0.into(),
            // Payload that does NOT start with "REMB" magic bytes
            payload: vec![0x01, 0x02, 0x03, 0x04].into(),
        };

        let rtcp = Rtcp::AppSpecificFeedback(fb);
        let mut buf = [0u8; 256];
        let written = rtcp.write_to(&mut buf);

        let mut parsed = VecDeque::new();
        Rtcp::read_packet(&buf[..written], &mut parsed, &mut None);

        assert_eq!(parsed.len(), 1);
        assert!(matches!(parsed[0], Rtcp::AppSpecificFeedback(_)));
    }
}
