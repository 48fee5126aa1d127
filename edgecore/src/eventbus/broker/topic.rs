//! Topic names and filters (MQTT 3.1.1 §4.7).

/// Whether `topic` can be published to: not empty, no wildcard.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#'])
}

/// Whether `filter` is a valid subscription filter: not empty, `#` only as the whole last level,
/// `+` only as a whole level. `$`-prefixed filters are valid.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether the (valid) `filter` matches the (valid) `topic`. A filter starting with a wildcard
/// does not match a topic starting with `$` (§4.7.2); `$hw/events/#` does match `$hw/events/x`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in ["#", "+", "a/#", "+/+", "$hw/events/device/+/+/twin/+", "/", "a//b", "+/user/#"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/b+/c", "##"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert!(valid_topic("$hw/events/x") && !valid_topic("a/+") && !valid_topic(""));
    }

    #[test]
    fn matching() {
        let yes = [
            ("$hw/events/device/+/+/twin/+", "$hw/events/device/default/t1/twin/update"),
            ("$hw/events/upload/#", "$hw/events/upload/a/b"),
            ("a/#", "a"),
            ("a/#", "a/b/c"),
            ("#", "a/b"),
            ("+/user/#", "x/user/y"),
            ("+", ""),
            ("a/+", "a/"),
            ("/+", "/x"),
        ];
        for (f, t) in yes {
            assert!(matches(f, t), "{f} should match {t}");
        }
        let no = [
            ("#", "$hw/events/x"),
            ("+/events/#", "$hw/events/x"),
            ("+/user/#", "$SYS/user/x"),
            ("$hw/events/device/+/+/twin/+", "$hw/events/device/default/t1/twin/update/result"),
            ("a/+", "a/b/c"),
            ("a/b", "a"),
            ("a", "a/b"),
            ("+", "/x"),
        ];
        for (f, t) in no {
            assert!(!matches(f, t), "{f} should not match {t}");
        }
    }
}
