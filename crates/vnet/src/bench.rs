//! `vnet bench`: measures of the hot paths, run against a real server process.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {}

pub async fn run(bench: Bench) -> Result<(), crate::BoxError> {
    match bench {}
}
