//! The policy SDK carries its own copy of the `stavka:policy` WIT so it can
//! be packaged and used outside this repository; it must be the host's.

#[test]
fn the_sdk_carries_the_hosts_wit_unchanged() {
    let host = include_str!("../../wit/policy.wit");
    let sdk = include_str!("../../guest-sdk/wit/policy.wit");
    assert!(
        host == sdk,
        "guest-sdk/wit/policy.wit differs from wit/policy.wit: copy it over (cp wit/policy.wit guest-sdk/wit/)"
    );
}
