//! `${NAME}` in the config file is replaced by the environment variable `NAME` before the
//! file is read: one ConfigMap serves every node of a DaemonSet, each daemon filling in its
//! own node name (`spiffe_id = "spiffe://cluster.local/node/${NODE_NAME}"`). An unset
//! variable is an error at its line, never an empty string. Comment lines are left alone.

use super::Problem;

/// The text with every `${NAME}` replaced, or a problem per unusable reference.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') || !line.contains("${") {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let problem = |message: String| Problem {
                line: Some(index + 1),
                key: None,
                message,
            };
            let Some(end) = after.find('}') else {
                problems.push(problem("a \"${\" without its \"}\"".into()));
                rest = "";
                break;
            };
            let name = &after[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                problems.push(problem(format!(
                    "\"${{{name}}}\" is not an environment variable reference (letters, digits and _)"
                )));
            } else {
                match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => problems.push(problem(format!(
                        "${{{name}}}: the environment variable {name} is not set"
                    ))),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "NODE_NAME").then(|| "node-7".into())
    }

    #[test]
    fn references_are_replaced_and_comments_left_alone() {
        let text = "# uses ${UNSET} in a comment\nspiffe_id = \"spiffe://td/node/${NODE_NAME}\"\n";
        assert_eq!(
            expand(text, env).unwrap(),
            "# uses ${UNSET} in a comment\nspiffe_id = \"spiffe://td/node/node-7\"\n"
        );
    }

    #[test]
    fn an_unset_or_malformed_reference_is_an_error_at_its_line() {
        let problems = expand(
            "a = 1\nb = \"${MISSING}\"\nc = \"${bad-name}\"\nd = \"${OPEN\"\n",
            env,
        )
        .unwrap_err();
        let said: Vec<_> = problems
            .iter()
            .map(|p| (p.line.unwrap(), p.message.as_str()))
            .collect();
        assert_eq!(
            said[0],
            (2, "${MISSING}: the environment variable MISSING is not set")
        );
        assert_eq!(said[1].0, 3);
        assert!(said[1].1.contains("not an environment variable reference"));
        assert_eq!(said[2], (4, "a \"${\" without its \"}\""));
    }
}
