//! The README, and its marked example blocks, for the tests that hold it to what the code does.

pub const README: &str = include_str!("../../README.md");

/// The lines of the fenced block that follows `<!-- example: NAME -->`.
pub fn block(name: &str) -> Vec<&'static str> {
    let marker = format!("<!-- example: {name} -->");
    let after = &README[README.find(&marker).unwrap_or_else(|| panic!("README has no {marker}")) + marker.len()..];
    let body = &after[after.find("```").expect("a fenced block follows") + 3..];
    let body = &body[body.find('\n').expect("a fence line") + 1..];
    body[..body.find("```").expect("the block is closed")].lines().collect()
}
