//! The README's table reference is generated from the schema definitions the code uses.

#[test]
fn readme_table_reference_matches_the_schema() {
    let readme = std::fs::read_to_string(crate::common::repo().join("README.md")).unwrap();
    let start = readme
        .find("<!-- tables:begin -->")
        .expect("README lacks the tables:begin marker");
    let end = readme
        .find("<!-- tables:end -->")
        .expect("README lacks the tables:end marker");
    let current = readme[start + "<!-- tables:begin -->".len()..end].trim();
    let expected = elevflyt::schema::markdown_reference();
    assert_eq!(current, expected.trim(), "regenerate with `make docs`");
}
