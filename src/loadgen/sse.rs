//! An incremental parser of `text/event-stream` (the WHATWG rules for LF and CRLF line ends):
//! bytes in as they arrive, whole events out. Comments and `retry` are ignored.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` when the event named none.
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// Feeds `bytes`; every event they complete is appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|byte| *byte == b'\n') {
            let line = &rest[..end];
            rest = &rest[end + 1..];
            if self.partial.is_empty() {
                self.line(line, out);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole, out);
            }
        }
        self.partial.extend_from_slice(rest);
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(b":") {
            return;
        }
        let (field, value) = match line.iter().position(|byte| *byte == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => self.event = Some(value.into_owned()),
            b"data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"id" => self.id = Some(value.into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        let id = self.id.take();
        // An event without data is not dispatched (the `id` still counts for a browser's
        // Last-Event-ID; callers here track the seq themselves).
        if let Some(data) = self.data.take() {
            out.push(SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
                id,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out);
        }
        out
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let stream = b"event: canonical_event\nid: 7\ndata: {\"seq\":7}\n\n: comment\r\nevent: heartbeat\r\ndata: {}\r\n\r\ndata: a\ndata:b\n\n";
        let expected = vec![
            SseEvent {
                event: "canonical_event".into(),
                data: "{\"seq\":7}".into(),
                id: Some("7".into()),
            },
            SseEvent {
                event: "heartbeat".into(),
                data: "{}".into(),
                id: None,
            },
            SseEvent {
                event: "message".into(),
                data: "a\nb".into(),
                id: None,
            },
        ];
        assert_eq!(parse(&[stream]), expected);
        for split in 1..stream.len() {
            let (head, tail) = stream.split_at(split);
            assert_eq!(parse(&[head, tail]), expected, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse(&bytes), expected);
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert!(parse(&[b"event: canonical_event\ndata: {}\n"]).is_empty());
        assert!(parse(&[b"id: 3\n\n"]).is_empty(), "no data, no event");
    }
}
