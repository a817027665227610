//! `GET /`: the dashboard, one self-contained HTML page (no external assets, so it
//! works offline) that polls `/status` every second and shows the group's members,
//! held time and follower lag over the last minutes (inline SVG), and a timeline of
//! failovers, elections and joins.

/// The page, served as is.
pub const PAGE: &str = include_str!("dashboard.html");

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for outside in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!PAGE.contains(outside), "the dashboard must be self-contained, but has {outside:?}");
        }
        assert!(PAGE.contains("fetch(\"/status\""));
    }
}
