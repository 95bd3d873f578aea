//! Rendering errors for the one line a user or an operator reads.

/// The innermost cause of an error chain, which is what a user can act on ("connection
/// refused", "invalid peer certificate: UnknownIssuer"); the error itself when the
/// innermost one says nothing.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let msg = cur.to_string();
    if msg.is_empty() {
        e.to_string()
    } else {
        msg
    }
}
