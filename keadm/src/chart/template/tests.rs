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

#[test]
fn to_yaml_quotes_yaml_1_1_words_as_helm_does() {
    let v = "m: {gpu: 'yes', a: 'on', b: 'off', c: 'y', d: 'N', e: 'true', f: '1', g: 'plain', 'on': 1}\n";
    let out = render("{{ toYaml .m }}", v).unwrap();
    for want in [r#"gpu: "yes""#, r#"a: "on""#, r#"b: "off""#, r#"c: "y""#, r#"d: "N""#, "g: plain"] {
        assert!(out.lines().any(|l| l == want), "{want:?} missing in\n{out}");
    }
    // Whatever quoting, a YAML 1.1 reader (kubectl's) reads the same strings back.
    assert!(out.lines().any(|l| l == "e: 'true'" || l == r#"e: "true""#), "{out}");
    assert!(out.lines().any(|l| l == "f: '1'" || l == r#"f: "1""#), "{out}");
    assert!(out.lines().any(|l| l == r#""on": 1"#), "{out}");
}

#[test]
fn block_scalars_keep_their_lines() {
    let yaml = "a: |-\n  yes\n  on: off\nb:\n- 'x'\n- on\n- - n\nc: no";
    assert_eq!(funcs::quote_yaml11_words(yaml), "a: |-\n  yes\n  on: off\nb:\n- 'x'\n- \"on\"\n- - \"n\"\nc: \"no\"");
}
