//! A small XML reader for the AWS EC2 Query API's responses (elements and text; attributes,
//! comments and processing instructions are skipped). Enough for `DescribeImages`, `CopyImage`
//! and the `<Response><Errors>` document; not a general XML parser.

/// An element: its local name, its text (concatenated, entities decoded) and its children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    /// The first child with this name.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children with this name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text at a `/`-separated path of child names, if present and not empty.
    pub fn text_at(&self, path: &str) -> Option<String> {
        let mut n = self;
        for p in path.split('/') {
            n = n.child(p)?;
        }
        Some(n.text.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// The first descendant (depth first, self included) with this name.
    pub fn find(&self, name: &str) -> Option<&Node> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

fn decode(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let ent = &rest[1..end];
        let ch = match ent {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if ent.starts_with("#x") => u32::from_str_radix(&ent[2..], 16).ok().and_then(char::from_u32),
            _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or(name).to_string()
}

/// Parse a document into its root element.
pub fn parse(doc: &str) -> Result<Node, String> {
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut rest = doc;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            stack.last_mut().expect("root").text.push_str(&decode(rest));
            break;
        };
        if lt > 0 {
            stack.last_mut().expect("root").text.push_str(&decode(&rest[..lt]));
        }
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            let end = r.find("-->").ok_or("unterminated comment")?;
            rest = &r[end + 3..];
            continue;
        }
        if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let end = r.find("]]>").ok_or("unterminated CDATA")?;
            stack.last_mut().expect("root").text.push_str(&r[..end]);
            rest = &r[end + 3..];
            continue;
        }
        let gt = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let node = stack.pop().ok_or("unbalanced end tag")?;
            if node.name != local(name.trim()) {
                return Err(format!("end tag {name} does not close {}", node.name));
            }
            stack.last_mut().ok_or("unbalanced end tag")?.children.push(node);
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name = local(tag.split_whitespace().next().unwrap_or_default());
        let node = Node {
            name,
            ..Default::default()
        };
        if self_closing {
            stack.last_mut().expect("root").children.push(node);
        } else {
            stack.push(node);
        }
    }
    if stack.len() != 1 {
        return Err("unclosed element".into());
    }
    stack
        .pop()
        .and_then(|r| r.children.into_iter().next())
        .ok_or_else(|| "no root element".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_ec2_response() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
  <imagesSet>
    <item><imageId>ami-1</imageId><name>web &amp; api</name><imageState>available</imageState>
      <blockDeviceMapping><item><ebs><snapshotId>snap-1</snapshotId><volumeSize>8</volumeSize><encrypted>true</encrypted></ebs></item></blockDeviceMapping>
      <tagSet/>
    </item>
    <item><imageId>ami-2</imageId></item>
  </imagesSet>
</DescribeImagesResponse>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "DescribeImagesResponse");
        let items: Vec<_> = root.child("imagesSet").unwrap().all("item").collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].text_at("name").as_deref(), Some("web & api"));
        assert_eq!(
            items[0].text_at("blockDeviceMapping/item/ebs/snapshotId").as_deref(),
            Some("snap-1")
        );
        assert_eq!(items[1].text_at("imageState"), None);
        assert!(parse("<a><b></a>").is_err());
    }
}
