//! `sluicectl counters`: every counter, `name{label="value"} n` per line.

use super::View;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub counters: Vec<Sample>,
}

/// One counter's value: its Prometheus name, its label (`port`, `reason`), if any, and value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: u64,
}

impl Sample {
    pub fn new(name: &str, label: Option<(&str, &str)>, value: u64) -> Sample {
        let labels = label.map(|(k, v)| (k.to_string(), v.to_string())).into_iter().collect();
        Sample { name: name.to_string(), labels, value }
    }
}

impl View for Counters {
    fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.counters {
            let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
            let _ = writeln!(s, "{}{labels} {}", c.name, c.value);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json() {
        let c = Counters {
            counters: vec![
                Sample::new("sluice_port_rx_packets_total", Some(("port", "ext")), 7),
                Sample::new("sluice_tunneled_packets_total", None, 9),
            ],
        };
        assert_eq!(
            c.text(),
            "sluice_port_rx_packets_total{port=\"ext\"} 7\nsluice_tunneled_packets_total 9\n"
        );
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["counters"][0]["labels"]["port"], "ext");
        assert_eq!(v["counters"][1]["labels"], serde_json::json!({}));
        assert_eq!(v["counters"][1]["value"], 9);
    }
}
