//! `advgrad tape`: the printed tape, the DOT file (a digraph with one node
//! per tape entry and one edge per input), the PNG (it decodes), and bad
//! arguments (exit 2, saying what is wrong).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn advgrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_advgrad"))
        .args(args)
        .output()
        .expect("advgrad starts")
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("advgrad-tape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A statement of the DOT subset: a node `nI [attrs];` or an edge
/// `nA -> nB [attrs];`.
#[derive(Debug, PartialEq)]
enum Statement {
    Node(usize, Vec<(String, String)>),
    Edge(usize, usize, Vec<(String, String)>),
}

/// Parses `digraph NAME { ... }` with graph attributes (`key=value;`),
/// default attributes (`node [...]`, `edge [...]`), nodes and edges whose
/// attribute values are identifiers, numbers or quoted strings with
/// backslash escapes. Panics on anything else.
fn parse_dot(text: &str) -> Vec<Statement> {
    let body = text
        .trim()
        .strip_prefix("digraph tape {")
        .and_then(|t| t.strip_suffix('}'))
        .expect("digraph tape { ... }");
    let mut out = Vec::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let (stmt, after) = split_statement(rest);
        rest = after.trim_start();
        let (head, attrs) = match stmt.find('[') {
            Some(i) => (
                stmt[..i].trim(),
                parse_attrs(
                    stmt[i + 1..]
                        .strip_suffix(']')
                        .expect("a closed attribute list"),
                ),
            ),
            None => (stmt.trim(), Vec::new()),
        };
        let id = |s: &str| -> usize {
            s.trim()
                .strip_prefix('n')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("bad node id `{s}`"))
        };
        if let Some((a, b)) = head.split_once("->") {
            out.push(Statement::Edge(id(a), id(b), attrs));
        } else if head == "node" || head == "edge" {
            assert!(!attrs.is_empty(), "empty default attributes");
        } else if head.contains('=') {
            let (k, v) = head.split_once('=').unwrap();
            assert!(k.trim().chars().all(|c| c.is_ascii_alphanumeric()) && !v.trim().is_empty());
        } else {
            out.push(Statement::Node(id(head), attrs));
        }
    }
    out
}

/// The text up to the `;` that ends the statement (outside quotes), and
/// what follows it.
fn split_statement(text: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => return (&text[..i], &text[i + 1..]),
            _ => {}
        }
    }
    panic!("a statement without `;`: {text}");
}

fn parse_attrs(text: &str) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("key=value");
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.expect("a closed string");
            (quoted[..end].to_string(), &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        attrs.push((key.trim().to_string(), value));
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    attrs
}

/// The rows of the printed tape table (one per tape entry).
fn tape_rows(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with('%')).collect()
}

#[test]
fn tape_prints_and_draws_one_node_per_entry() {
    let (dot_path, png_path) = (temp("tape.dot"), temp("tape.png"));
    let out = advgrad(&[
        "tape",
        "--arch",
        "784-8-8-10",
        "--act",
        "tanh",
        "--dot",
        dot_path.to_str().unwrap(),
        "--png",
        png_path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 3 layers: the input, 6 parameters, 2 linear_tanh, matmul, add_row, loss.
    let rows = tape_rows(&stdout);
    assert_eq!(rows.len(), 12, "{stdout}");
    assert!(
        rows[3].contains("linear_tanh") && rows[11].contains("softmax_cross_entropy"),
        "{stdout}"
    );
    assert!(
        rows.iter()
            .all(|r| r.contains("e-") || r.contains("e0") || r.contains("e1")),
        "every node has a gradient norm:\n{stdout}"
    );

    let statements = parse_dot(&std::fs::read_to_string(&dot_path).unwrap());
    let nodes: Vec<usize> = statements
        .iter()
        .filter_map(|s| match s {
            Statement::Node(i, _) => Some(*i),
            _ => None,
        })
        .collect();
    assert_eq!(nodes, (0..12).collect::<Vec<_>>());
    let edges: Vec<_> = statements
        .iter()
        .filter_map(|s| match s {
            Statement::Edge(a, b, attrs) => Some((*a, *b, attrs)),
            _ => None,
        })
        .collect();
    // Three inputs per linear_tanh, two for matmul and add_row, one for the loss.
    assert_eq!(edges.len(), 3 + 3 + 2 + 2 + 1);
    for (a, b, attrs) in &edges {
        assert!(a < b && *b < 12, "edge n{a} -> n{b}");
        let label = &attrs
            .iter()
            .find(|(k, _)| k == "label")
            .expect("a gradient norm")
            .1;
        assert!(
            label.parse::<f64>().is_ok_and(|v| v > 0.0),
            "label `{label}`"
        );
    }
    if let Ok(plain) = Command::new("dot").arg("-Tplain").arg(&dot_path).output() {
        let text = String::from_utf8_lossy(&plain.stdout);
        assert!(plain.status.success(), "Graphviz rejects the file");
        assert_eq!(text.lines().filter(|l| l.starts_with("node ")).count(), 12);
        assert_eq!(
            text.lines().filter(|l| l.starts_with("edge ")).count(),
            edges.len()
        );
    }

    let decoder = png::Decoder::new(std::fs::File::open(&png_path).unwrap());
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("the PNG decodes");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert!(
        info.width > 300 && info.height > 300,
        "{}x{}",
        info.width,
        info.height
    );
    assert!(pixels.iter().any(|&p| p != 255), "the picture is not blank");
    std::fs::remove_dir_all(dot_path.parent().unwrap()).ok();
}

#[test]
fn bad_arguments_exit_2_and_say_why() {
    for (args, says) in [
        (
            &["tape", "--arch", "784-x-10"][..],
            "bad architecture `784-x-10`",
        ),
        (&["tape", "--arch", "784"], "bad architecture `784`"),
        (&["tape", "--arch", "100000-10"], "too big to draw"),
        (&["tape", "--act", "swish"], "swish"),
        (&["tape", "--batch", "0"], "--batch"),
        (&["tape", "--bogus"], "--bogus"),
    ] {
        let out = advgrad(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?}: expected `{says}` in\n{stderr}"
        );
    }
}

#[test]
fn an_unwritable_file_is_a_runtime_error_naming_it() {
    let target = Path::new("/nonexistent-advgrad-folder/tape.png");
    let out = advgrad(&["tape", "--arch", "4-3", "--png", target.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("/nonexistent-advgrad-folder"),
        "{stderr}"
    );
}
