//! Every parser of user or network input returns an error rather than panicking, whatever
//! it is given.

use odonata_proto::messages::{Header, RegisterRequest, SyncRequest, SyncResponse};
use odonata_proto::units::{parse_duration, parse_rate};
use odonata_proto::{Digest, PieceDigest, TaskId, TaskKey};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn text_parsers_never_panic(s in "\\PC{0,80}") {
        let _ = Header::parse(&s);
        let _ = s.parse::<Digest>();
        let _ = Digest::md5_hex(&s);
        let _ = s.parse::<PieceDigest>();
        let _ = TaskId::parse(&s);
        let _ = TaskKey::new(&s, std::slice::from_ref(&s));
        let _ = parse_rate(&s);
        let _ = parse_duration(&s);
    }

    #[test]
    fn url_like_inputs_never_panic(host in "[a-z0-9.\\[\\]:%-]{0,20}", path in "[ -~]{0,40}") {
        let _ = TaskKey::new(&format!("http://{host}/{path}"), &["a".into()]);
    }

    #[test]
    fn frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<RegisterRequest>(&bytes);
        let _ = serde_json::from_slice::<SyncRequest>(&bytes);
        let _ = serde_json::from_slice::<SyncResponse>(&bytes);
    }
}

#[test]
fn hostile_frames_are_refused_with_a_reason() {
    let e = serde_json::from_str::<SyncResponse>(
        r#"{"state":"running","layout":{"piece_size":1,"content_length":null},"piece_count":null,
            "assignments":[{"num":0,"len":1,"digest":"zz","parents":[]}]}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");
    let e = serde_json::from_str::<TaskId>(r#""../../etc/passwd""#).unwrap_err();
    assert!(e.to_string().contains("malformed task id"), "{e}");
}
