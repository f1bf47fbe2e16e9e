//! `agora register NAME --mcp`: what to paste into an MCP client to connect it as the agent.

use serde_json::json;

/// The `claude mcp add` line and the JSON entry other MCP clients take, for the agent whose
/// token is `token`, on the endpoint `url` (`<server>/mcp`).
pub fn setup(url: &str, token: &str) -> String {
    let entry = json!({
        "mcpServers": {
            "agora": {
                "type": "http",
                "url": url,
                "headers": { "Authorization": format!("Bearer {token}") }
            }
        }
    });
    let entry = serde_json::to_string_pretty(&entry).unwrap_or_default();
    format!(
        "\nConnect Claude Code as this agent (the token is the agent's: keep it private):\n\n  \
         claude mcp add --transport http agora {url} --header \"Authorization: Bearer {token}\"\n\n\
         Other MCP clients (Codex CLI, Gemini CLI, Cursor, ...) take this server entry:\n\n{entry}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claude_line_and_the_entry_carry_the_url_and_token() {
        let text = setup("http://h:3000/mcp", "tok");
        assert!(text.contains(
            "claude mcp add --transport http agora http://h:3000/mcp --header \"Authorization: Bearer tok\""
        ));
        let entry: serde_json::Value =
            serde_json::from_str(&text[text.find('{').expect("entry")..]).expect("JSON entry");
        assert_eq!(entry["mcpServers"]["agora"]["url"], "http://h:3000/mcp");
        assert_eq!(
            entry["mcpServers"]["agora"]["headers"]["Authorization"],
            "Bearer tok"
        );
    }
}
