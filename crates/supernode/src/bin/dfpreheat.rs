//! `dfpreheat`: ask a supernode to warm its cache with a URL or an OCI image, and follow
//! the job until it is done. Exit 0 when every file is cached; otherwise one line on
//! stderr saying why, exit 1.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use odonata_proto::messages::{ErrorBody, Header};
use odonata_proto::units::parse_duration;
use odonata_supernode::preheat::{PreheatRequest, PreheatState, PreheatStatus};

/// Command line of `dfpreheat`.
#[derive(Parser, Debug)]
#[command(
    name = "dfpreheat",
    version,
    about = "Warm an Odonata supernode's cache"
)]
struct Args {
    /// Supernode control address HOST:PORT.
    #[arg(short = 'n', long = "node")]
    node: String,
    /// URL of a file to cache.
    #[arg(short = 'u', long = "url", conflicts_with = "image")]
    url: Option<String>,
    /// OCI image reference HOST[:PORT]/REPO[:TAG|@DIGEST]: its config and every layer.
    #[arg(short = 'i', long = "image")]
    image: Option<String>,
    /// Header for the source, 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Use plain HTTP to the registry (default only for loopback hosts).
    #[arg(long = "plain-http")]
    plain_http: bool,
    /// Give up after this long, e.g. 10m.
    #[arg(short = 'e', long, default_value = "30m")]
    timeout: String,
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dfpreheat: error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("dfpreheat: error: {e:#}");
        std::process::exit(1);
    }
}

async fn answer<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let code = resp.status();
    let text = resp
        .text()
        .await
        .context("reading the supernode's answer")?;
    if !code.is_success() {
        let msg = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| text.trim().to_owned());
        bail!("supernode answered {code}: {msg}");
    }
    serde_json::from_str(&text).context("the supernode's answer is not a preheat status")
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.url.is_none() && args.image.is_none() {
        bail!("give --url URL or --image REF");
    }
    let headers = args
        .headers
        .iter()
        .map(|h| Header::parse(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let limit = parse_duration(&args.timeout)?;
    let req = PreheatRequest {
        url: args.url.clone(),
        image: args.image.clone(),
        headers,
        filter: vec![],
        plain_http: args.plain_http.then_some(true),
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = format!("http://{}/api/v1/preheat", args.node);
    let resp = http
        .post(&base)
        .json(&req)
        .send()
        .await
        .with_context(|| format!("cannot reach supernode {}", args.node))?;
    let mut st: PreheatStatus = answer(resp).await?;
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let line = progress(&st);
        if line != last {
            println!("dfpreheat: {line}");
            last = line;
        }
        match st.state {
            PreheatState::Done => return Ok(()),
            PreheatState::Failed => bail!("{}", st.message.unwrap_or_else(|| "failed".into())),
            PreheatState::Running => {}
        }
        if started.elapsed() > limit {
            bail!("preheat {} not done after {}", st.id, args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let resp = http
            .get(format!("{base}/{}", st.id))
            .send()
            .await
            .with_context(|| format!("cannot reach supernode {}", args.node))?;
        st = answer(resp).await?;
    }
}

fn progress(st: &PreheatStatus) -> String {
    let done = st
        .files
        .iter()
        .filter(|f| f.state == PreheatState::Done)
        .count();
    let bytes: u64 = st.files.iter().map(|f| f.done_bytes).sum();
    let state = match st.state {
        PreheatState::Running => "running",
        PreheatState::Done => "done",
        PreheatState::Failed => "failed",
    };
    format!(
        "{state}: {done}/{} files, {} MiB cached",
        st.files.len(),
        bytes >> 20
    )
}
