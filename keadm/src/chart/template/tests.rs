use super::*;

fn render(src: &str, values: &str) -> Result<String, Error> {
    let t = Templates::parse([("_h.tpl", r#"{{- define "x" -}}<{{ . }}>{{- end -}}"#), ("t.yaml", src)])?;
    let dot = Value::from_yaml(values).unwrap();
    Ok(t.render(&dot)?.remove(0).1)
}

#[test]
fn trims_and_comments_as_go() {
    assert_eq!(render("a  {{- 1 -}}  b\n{{/* c */}}d{{- /* e */ -}} f", "{}").unwrap(), "a1b\ndf");
    assert_eq!(render("a {{- \"x\" }} b", "{}").unwrap(), "ax b");
}

#[test]
fn control_flow_and_variables() {
    let v = "l: [a, b]\nm: {k2: 2, k1: 1}\nt: true\ne: ''\n";
    assert_eq!(render("{{ range $i, $x := .l }}{{ $i }}={{ $x }};{{ end }}", v).unwrap(), "0=a;1=b;");
    assert_eq!(render("{{ range $k, $x := .m }}{{ $k }}={{ $x }};{{ end }}", v).unwrap(), "k1=1;k2=2;");
    assert_eq!(render("{{ range .none }}x{{ else }}empty{{ end }}", v).unwrap(), "empty");
    assert_eq!(render("{{ if .e }}1{{ else if .t }}2{{ else }}3{{ end }}", v).unwrap(), "2");
    assert_eq!(render("{{ with .m }}{{ .k1 }}{{ $.t }}{{ end }}", v).unwrap(), "1true");
    assert_eq!(render("{{ $a := 1 }}{{ if .t }}{{ $a = 2 }}{{ $b := 3 }}{{ end }}{{ $a }}", v).unwrap(), "2");
    assert!(render("{{ if .t }}{{ $b := 3 }}{{ end }}{{ $b }}", v).is_err(), "a variable ends with its block");
    assert_eq!(render("{{ and .t .e }}|{{ or .e .l }}|{{ not .e }}", v).unwrap(), "|[a b]|true");
    assert_eq!(render(r#"{{ eq "a" "b" "a" }}{{ (first .l) }}"#, v).unwrap(), "truea");
}

#[test]
fn helm_functions() {
    let v = "m: {b: [1, x], a: ''}\nl: ['', a, '']\n";
    assert_eq!(render("k: {{- toYaml .m | nindent 2 }}", v).unwrap(), "k:\n  a: ''\n  b:\n  - 1\n  - x");
    assert_eq!(render(r#"{{ include "x" .l }}"#, v).unwrap(), "<[ a ]>");
    assert_eq!(render(r#"{{ quote "a\"b" 3 nil }}"#, v).unwrap(), r#""a\"b" "3""#);
    assert_eq!(render("{{ compact .l }}", v).unwrap(), "[a]");
    let e = render(r#"{{ required "give l" (first .m.a) }}"#, v).unwrap_err();
    assert!(e.to_string().contains("can't") || e.to_string().contains("first"), "{e}");
    let e = render(r#"{{ required "set .x" .x }}"#, v).unwrap_err();
    assert!(e.to_string().contains("set .x"), "{e}");
}

#[test]
fn errors_name_the_file_and_the_problem() {
    let e = render("{{ .a.b.c }}", "{}").unwrap_err().to_string();
    assert!(e.contains("t.yaml") && e.contains("nil pointer evaluating interface {}.c") || e.contains(".b"), "{e}");
    let e = render("\n{{ tpl . }}", "{}").unwrap_err().to_string();
    assert_eq!(e, "template: t.yaml:2: function \"tpl\" not defined");
    assert!(render("{{ if 1 }}", "{}").unwrap_err().to_string().contains("no {{end}}"));
}

#[test]
fn a_field_chain_binds_to_a_parenthesis_only_without_a_space() {
    let v = "l: [{x: 1}, {x: 2}]\nx: 1\n";
    // Go: `(first .l).x` is one argument; `(first .l) .x` is two.
    assert_eq!(render("{{ (first .l).x }}", v).unwrap(), "1");
    assert_eq!(render("{{ eq (first .l).x .x }}", v).unwrap(), "true");
    assert_eq!(render("{{ or (first .l) .x }}", v).unwrap(), "map[x:1]");
}
