//! A streamed OpenAI chat completion (or legacy completion), one SSE event
//! at a time: span facts, tool calls assembled from fragments, the reply's
//! digest, and in messages mode each choice's text.

use super::*;

/// Accumulates a streamed chat completion (or legacy completion), one SSE
/// event at a time.
#[derive(Debug)]
pub struct ChatStream {
    facts: ResponseFacts,
    /// Generated text, counted only if the stream ends without usage.
    counter: StreamCounter,
    /// Tool calls by (choice, index), assembled from fragments.
    calls: Vec<((usize, usize), ToolCall)>,
    /// The first choice's content, for the reply's digest.
    text: TextDigest,
    saw_choice: bool,
    /// Messages mode (a replay for `messages`; never on the request path):
    /// each choice's text, refusal and finish reason.
    out: Option<Vec<ChoiceOut>>,
    /// `data: [DONE]` was seen.
    pub done: bool,
    /// Events whose data was not a JSON chunk.
    pub malformed_events: u64,
}

impl ChatStream {
    /// `likely_estimated`: the request did not ask for a usage chunk, so the
    /// output will probably be estimated (the text is kept either way, for a
    /// stream cut before its usage chunk).
    pub fn new(enc: Encoding, likely_estimated: bool) -> Self {
        ChatStream {
            facts: ResponseFacts::default(),
            counter: if likely_estimated {
                StreamCounter::new(enc)
            } else {
                StreamCounter::standby(enc)
            },
            calls: Vec::new(),
            text: TextDigest::default(),
            saw_choice: false,
            out: None,
            done: false,
            malformed_events: 0,
        }
    }

    /// This parser in messages mode (see [`ChatStream::into_messages`]).
    pub fn with_messages(mut self) -> Self {
        self.out = Some(Vec::new());
        self
    }

    /// Takes one event's data. Returns true when it carried generated
    /// content (text, refusal, reasoning or tool-call fragments): the first
    /// such event marks time to first token.
    pub fn on_event(&mut self, data: &[u8]) -> bool {
        if data == b"[DONE]" {
            self.done = true;
            return false;
        }
        let chunk: Chunk = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(_) => {
                self.malformed_events += 1;
                return false;
            }
        };
        if self.facts.response_id.is_none() {
            self.facts.response_id = chunk.id;
        }
        if self.facts.response_model.is_none() {
            self.facts.response_model = chunk.model;
        }
        if let Some(u) = &chunk.usage {
            self.facts.usage = u.to_usage();
        }
        if let Some(e) = &chunk.error {
            self.facts.error = Some(e.to_api_error());
        }
        let mut content = false;
        for choice in chunk.choices.iter().flatten() {
            if let Some(out) = self.out.as_mut() {
                keep_choice(out, choice);
            }
            if let Some(fr) = &choice.finish_reason {
                if self.facts.finish_reason.is_none() || choice.index.unwrap_or(0) == 0 {
                    self.facts.finish_reason = Some(fr.clone());
                }
            }
            if choice.index.unwrap_or(0) == 0 {
                if let Some(d) = &choice.delta {
                    self.saw_choice = true;
                    if let Some(c) = &d.content {
                        self.text.push(c);
                    }
                }
            }
            let texts = choice
                .delta
                .iter()
                .flat_map(|d| [&d.content, &d.refusal, &d.reasoning_content, &d.reasoning]);
            for text in texts.chain([&choice.text]).flatten() {
                if !text.is_empty() {
                    content = true;
                    self.counter.push(text);
                }
            }
            let Some(delta) = &choice.delta else { continue };
            for call in delta.tool_calls.iter().flatten() {
                content = true;
                let key = (choice.index.unwrap_or(0), call.index.unwrap_or(0));
                let pos = match self.calls.iter().position(|(k, _)| *k == key) {
                    Some(p) => p,
                    None if self.calls.len() < MAX_TOOL_CALLS => {
                        self.calls.push((key, ToolCall::default()));
                        self.calls.len() - 1
                    }
                    None => continue,
                };
                let slot = &mut self.calls[pos].1;
                if let Some(id) = &call.id {
                    slot.id = id.to_string();
                }
                if let Some(f) = &call.function {
                    if let Some(name) = &f.name {
                        push_capped(&mut slot.name, name, 256);
                    }
                    if let Some(args) = &f.arguments {
                        push_capped(&mut slot.arguments, args, MAX_TOOL_ARGS);
                    }
                    for text in [&f.name, &f.arguments].into_iter().flatten() {
                        self.counter.push(text);
                    }
                }
            }
        }
        content
    }

    /// The span fields seen so far (a cut stream keeps what it saw).
    pub fn finish(mut self) -> ResponseFacts {
        if self.facts.usage.output.is_none() {
            self.facts.output_text = Some(self.counter);
        }
        if self.saw_choice {
            let ids: Vec<String> = self
                .calls
                .iter()
                .filter(|((choice, _), _)| *choice == 0)
                .map(|(_, c)| c.id.clone())
                .collect();
            self.facts.assistant_digest =
                Some(stitch::message_digest("assistant", &self.text, &ids));
        }
        self.facts.tool_calls = self.calls.into_iter().map(|(_, c)| c).collect();
        self.facts
    }

    /// Messages mode: one reply per choice seen (`None` when no chunk had
    /// a choice).
    pub fn into_messages(self) -> Option<Messages> {
        let out = self.out.filter(|o| !o.is_empty())?;
        let list = out
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut parts = Vec::new();
                if !c.text.is_empty() {
                    parts.push(Part::Text(c.text));
                }
                if !c.refusal.is_empty() {
                    parts.push(Part::Shown(Box::new(Part::Block {
                        kind: "refusal".into(),
                        text: Some(c.refusal),
                    })));
                }
                for (_, call) in self.calls.iter().filter(|((choice, _), _)| *choice == i) {
                    parts.push(Part::ToolCall {
                        id: messages::text_or_null(&call.id),
                        name: messages::text_or_null(&call.name),
                        arguments: messages::args_text(&call.arguments),
                    });
                }
                let finish = c.finish.map_or(serde_json::Value::Null, Into::into);
                messages::reply(parts, finish)
            })
            .collect();
        Some(Messages::exported(list))
    }
}

/// Keeps one chunk's choice for messages mode.
fn keep_choice(out: &mut Vec<ChoiceOut>, choice: &ChunkChoice<'_>) {
    let i = choice.index.unwrap_or(0);
    if i > MAX_CHOICES {
        return;
    }
    while out.len() <= i {
        out.push(ChoiceOut::default());
    }
    let c = &mut out[i];
    let d = choice.delta.as_ref();
    if let Some(t) = d
        .and_then(|d| d.content.as_deref())
        .or(choice.text.as_deref())
    {
        c.text.push_str(t);
    }
    if let Some(r) = d.and_then(|d| d.refusal.as_deref()) {
        c.refusal.push_str(r);
    }
    if choice.finish_reason.is_some() {
        c.finish.clone_from(&choice.finish_reason);
    }
}

/// A streamed choice as the messages mode keeps it.
#[derive(Debug, Default)]
struct ChoiceOut {
    text: String,
    refusal: String,
    finish: Option<String>,
}

/// Most choices a replayed stream keeps.
const MAX_CHOICES: usize = 64;
