//! The README's "Your first gateway", run as written: its commands are read
//! from the README itself (every `$ ` line of its `console` blocks, with a
//! here-document's lines), run in order in one `bash` in an empty directory
//! with the test build's `portico` first on `PATH`, and each command's output
//! must be what the README shows under it. Edit the walkthrough and this test
//! follows; break the gateway and the walkthrough fails.

use crate::support::fixed_ports_blocking;
use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Step {
    command: String,
    shown: String,
}

/// The walkthrough's commands and the output shown for each.
fn steps(readme: &str) -> Vec<Step> {
    let section = readme
        .split("\n## Your first gateway\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has a \"Your first gateway\" section");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for event in Parser::new(section) {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(lang))) if &*lang == "console" => {
                current = Some(String::new())
            }
            Event::Text(text) => {
                if let Some(block) = current.as_mut() {
                    block.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => blocks.extend(current.take()),
            _ => {}
        }
    }
    let mut steps: Vec<Step> = Vec::new();
    for block in blocks {
        let mut lines = block.lines();
        while let Some(line) = lines.next() {
            if let Some(command) = line.strip_prefix("$ ") {
                let mut command = command.to_string();
                // A here-document's lines belong to its command.
                if let Some(end) = command.split("<<'").nth(1).and_then(|s| s.split('\'').next()) {
                    let end = end.to_string();
                    for body in lines.by_ref() {
                        command.push('\n');
                        command.push_str(body);
                        if body == end {
                            break;
                        }
                    }
                }
                steps.push(Step {
                    command,
                    shown: String::new(),
                });
            } else {
                let step = steps.last_mut().expect("output before any command");
                step.shown.push_str(line);
                step.shown.push('\n');
            }
        }
    }
    steps
}

fn tidy(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

#[test]
fn the_first_gateway_walkthrough_runs_as_written() {
    let _ports = fixed_ports_blocking();
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() >= 15, "found only {} commands", steps.len());
    for tool in ["python3", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "the walkthrough needs {tool}: install it (apt-get install {tool})"
        );
    }

    const MARK: &str = "@@walkthrough step@@";
    let mut script = String::new();
    for step in &steps {
        script.push_str(&format!("echo '{MARK}'\n{}\n", step.command));
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_portico")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut shell = Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the services and the gateway it starts
        // in the background are stopped with it whatever happens.
        .process_group(0)
        .spawn()
        .expect("bash runs");
    struct Group(u32);
    impl Drop for Group {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0)])
                .status();
        }
    }
    let _group = Group(shell.id());

    let deadline = Instant::now() + Duration::from_secs(90);
    while shell.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the walkthrough did not finish in 90 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut out, mut err) = (String::new(), String::new());
    shell.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    shell.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.trim().is_empty(), "the walkthrough wrote to stderr:\n{err}");

    let outputs: Vec<&str> = out.split(&format!("{MARK}\n")).skip(1).collect();
    assert_eq!(outputs.len(), steps.len(), "not every command ran:\n{out}");
    for (step, output) in steps.iter().zip(outputs) {
        assert_eq!(
            tidy(output),
            tidy(&step.shown),
            "`{}` printed something else than the README shows",
            step.command.lines().next().unwrap_or("")
        );
    }
}
