//! `geotag invoke FUNCTION EVENT`: one function, once, on an event file
//! (what `sam local invoke` does, without Docker).

use anyhow::{Context as _, Result};
use geotag_local_cloud::stack::LocalStack;

use crate::args::InvokeArgs;

pub async fn run(args: InvokeArgs) -> Result<()> {
    let local = LocalStack::start(&args.stack.options()?).await?;
    let functions = &local.stack.functions;
    let spec = functions
        .values()
        .find(|f| {
            f.logical_id == args.function || f.binary == args.function || f.name == args.function
        })
        .with_context(|| {
            let known: Vec<&str> = functions.keys().map(String::as_str).collect();
            format!(
                "no function {:?} in the template; there are: {}",
                args.function,
                known.join(", ")
            )
        })?
        .clone();
    let text = std::fs::read_to_string(&args.event)
        .with_context(|| format!("reading {}", args.event.display()))?;
    let payload: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.event.display()))?;
    let (invoker, _sam_local) = args.stack.invoker(&local).await?;
    let response = invoker.invoke(&spec, payload).await?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}
