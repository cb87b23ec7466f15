//! Test guest: the `slicing` hook (stavka:policy 0.1.1).
//! - `/whole`: never in blocks, whatever the site says.
//! - `/v`: in blocks of 128 KiB with no read-ahead, even if the site does not slice.
//! - anything else: as the site says.
use stavka_policy::{
    export_policy, HookSet, Policy, Request, RequestOutcome, SliceDecision, SliceSettings,
};
struct Slicer;
impl Policy for Slicer {
    const HOOKS: HookSet = HookSet::ON_REQUEST;
    const SLICES: bool = true;
    fn on_request(_req: &Request) -> RequestOutcome {
        RequestOutcome::lookup()
    }
    fn on_slice(req: &Request) -> SliceDecision {
        match req.path() {
            "/whole" => SliceDecision::Whole,
            "/v" => SliceDecision::Slice(SliceSettings {
                block_kib: Some(128),
                read_ahead: Some(0),
            }),
            _ => SliceDecision::Default,
        }
    }
}
export_policy!(Slicer);
