//! kubectl's output forms for `keadm ctl get` and `keadm debug get`: the table (kubectl's
//! columns, from kube-serve's server-side printers, laid out as kubectl's tabwriter does),
//! `-o wide`, `-o json|yaml` (one object, or a `v1` `List`) and `-o name`.

use std::fmt::Write as _;

use kubeedge_kube_serve::table::{IncludeObject, to_table};
use serde_json::{Value, json};

/// `-o`: how objects are printed.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The table with the extra ("wide") columns.
    Wide,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// `kind/name` per object.
    Name,
}

/// What is printed, and how.
pub struct View<'a> {
    /// The resource, plural (`pods`, `configmaps`), for the column set.
    pub resource: &'a str,
    /// The objects.
    pub objects: &'a [Value],
    /// `-o`, or the table.
    pub output: Option<Output>,
    /// A NAMESPACE column first (`-A`).
    pub namespace_column: bool,
    /// One object asked for by name: JSON/YAML print it alone, not in a `List`.
    pub single: bool,
}

/// Renders `view` (ending with a newline unless empty). `now` is Unix seconds, for ages.
pub fn render(view: &View<'_>, now: i64) -> String {
    match view.output {
        Some(Output::Json) => json_text(&wrap(view)),
        Some(Output::Yaml) => yaml_serde::to_string(&wrap(view)).unwrap_or_default(),
        Some(Output::Name) => {
            let mut out = String::new();
            for o in view.objects {
                let kind = o.get("kind").and_then(Value::as_str).unwrap_or(view.resource).to_ascii_lowercase();
                let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                let _ = writeln!(out, "{kind}/{name}");
            }
            out
        }
        Some(Output::Wide) | None => {
            if view.objects.is_empty() {
                return String::new();
            }
            let table = to_table(view.resource, "", view.objects, IncludeObject::None, now);
            table_text(&table, view.objects, view.output == Some(Output::Wide), view.namespace_column)
        }
    }
}

fn json_text(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// One object alone, or a kubectl `List`.
fn wrap(view: &View<'_>) -> Value {
    match (view.single, view.objects) {
        (true, [one]) => one.clone(),
        _ => json!({"apiVersion": "v1", "kind": "List", "items": view.objects, "metadata": {"resourceVersion": ""}}),
    }
}

/// A `meta.k8s.io/v1` `Table` as kubectl prints it: upper-case headers, priority-1 columns only
/// when `wide`, columns separated by three spaces and padded to the widest cell.
pub fn table_text(table: &Value, objects: &[Value], wide: bool, namespace_column: bool) -> String {
    let columns = table.get("columnDefinitions").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let shown: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| wide || c.get("priority").and_then(Value::as_i64).unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    if namespace_column {
        header.push("NAMESPACE".into());
    }
    header.extend(
        shown.iter().map(|&i| {
            columns[i].get("name").and_then(Value::as_str).unwrap_or("").to_ascii_uppercase().replace(' ', "-")
        }),
    );
    lines.push(header);
    let rows = table.get("rows").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    for (n, row) in rows.iter().enumerate() {
        let cells = row.get("cells").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        let mut line = Vec::new();
        if namespace_column {
            let ns = objects.get(n).and_then(|o| o.pointer("/metadata/namespace")).and_then(Value::as_str);
            line.push(ns.unwrap_or("").to_owned());
        }
        line.extend(shown.iter().map(|&i| cell(cells.get(i))));
        lines.push(line);
    }
    align(&lines)
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "<none>".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Columns padded to their widest cell plus three spaces (the last column unpadded).
pub fn align(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| lines.iter().filter_map(|l| l.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (c, s) in line.iter().enumerate() {
            text.push_str(s);
            if c + 1 < line.len() {
                let pad = widths[c].saturating_sub(s.chars().count()) + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn pod(ns: &str, name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2023-11-14T22:03:20Z"},
            "spec": {"nodeName": "edge-1", "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7",
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2, "state": {"running": {}}}]}})
    }

    fn view<'a>(objects: &'a [Value], output: Option<Output>, ns: bool) -> View<'a> {
        View { resource: "pods", objects, output, namespace_column: ns, single: false }
    }

    #[test]
    fn tables_print_kubectls_columns_aligned() {
        let pods = [pod("default", "web"), pod("kube-system", "a-much-longer-name")];
        let text = render(&view(&pods, None, false), NOW);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME                 READY   STATUS    RESTARTS   AGE");
        assert!(lines[1].starts_with("web                  1/1     Running   2          "), "{text}");
        assert_eq!(lines.len(), 3);

        let wide = render(&view(&pods[..1], Some(Output::Wide), true), NOW);
        let header = wide.lines().next().unwrap();
        assert!(header.starts_with("NAMESPACE   NAME   READY"), "{wide}");
        assert!(header.contains("IP") && header.contains("NODE") && header.contains("NOMINATED-NODE"), "{wide}");
        let row = wide.lines().nth(1).unwrap();
        assert!(row.starts_with("default     web") && row.contains("10.0.0.7") && row.contains("edge-1"), "{wide}");

        assert_eq!(render(&view(&[], None, false), NOW), "");
    }

    #[test]
    fn json_yaml_and_name_outputs() {
        let pods = [pod("default", "web")];
        let one: Value = serde_json::from_str(&render(
            &View {
                resource: "pods",
                objects: &pods,
                output: Some(Output::Json),
                namespace_column: false,
                single: true,
            },
            NOW,
        ))
        .unwrap();
        assert_eq!(one["metadata"]["name"], "web");
        let list: Value = serde_json::from_str(&render(&view(&pods, Some(Output::Json), false), NOW)).unwrap();
        assert_eq!((list["kind"].as_str(), list["items"][0]["metadata"]["name"].as_str()), (Some("List"), Some("web")));
        let yaml = render(&view(&pods, Some(Output::Yaml), false), NOW);
        assert!(yaml.contains("kind: List") && yaml.contains("name: web"), "{yaml}");
        assert_eq!(render(&view(&pods, Some(Output::Name), false), NOW), "pod/web\n");
    }

    #[test]
    fn align_pads_to_the_widest_cell() {
        let lines = vec![vec!["A".to_owned(), "B".to_owned()], vec!["long".to_owned(), "x".to_owned()]];
        assert_eq!(align(&lines), "A      B\nlong   x\n");
    }
}
