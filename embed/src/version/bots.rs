//! One compiled guest and its instance, whichever contract version it was
//! built for: the calls take and give the newest contract's values, and a
//! guest built for an older one gets them through its adapters.

use wasmtime::Store;
use wasmtime::component::{Component, Linker};

use super::{v0_1_0, v0_2_0, v0_3_0};
use crate::bindings::{Bot, BotPre};
use crate::ctx::Ctx;
use crate::{Event, GuestInfo, HostInfo};

/// The contract versions a guest can be built for, as the host links them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contract {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_4_0,
}

impl Contract {
    /// Every version this host links, oldest first.
    pub const ALL: &[Contract] = &[
        Contract::V0_1_0,
        Contract::V0_2_0,
        Contract::V0_3_0,
        Contract::V0_4_0,
    ];

    /// The version as the WIT package names it.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1_0 => "0.1.0",
            Contract::V0_2_0 => "0.2.0",
            Contract::V0_3_0 => "0.3.0",
            Contract::V0_4_0 => "0.4.0",
        }
    }

    /// The newest version: what the SDK builds for.
    pub fn newest() -> Contract {
        Contract::V0_4_0
    }
}

/// Every version's imports in one linker (their names differ by version).
pub(crate) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    Bot::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |c: &mut Ctx| c)?;
    v0_1_0::Bot::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |c: &mut Ctx| c)?;
    v0_2_0::Bot::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |c: &mut Ctx| c)?;
    v0_3_0::Bot::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |c: &mut Ctx| c)
}

#[derive(Clone)]
pub(crate) enum Pre {
    V0_1_0(v0_1_0::BotPre<Ctx>),
    V0_2_0(v0_2_0::BotPre<Ctx>),
    V0_3_0(v0_3_0::BotPre<Ctx>),
    V0_4_0(BotPre<Ctx>),
}

impl Pre {
    pub(crate) fn new(
        linker: &Linker<Ctx>,
        component: &Component,
        contract: Contract,
    ) -> wasmtime::Result<Pre> {
        let pre = linker.instantiate_pre(component)?;
        Ok(match contract {
            Contract::V0_1_0 => Pre::V0_1_0(v0_1_0::BotPre::new(pre)?),
            Contract::V0_2_0 => Pre::V0_2_0(v0_2_0::BotPre::new(pre)?),
            Contract::V0_3_0 => Pre::V0_3_0(v0_3_0::BotPre::new(pre)?),
            Contract::V0_4_0 => Pre::V0_4_0(BotPre::new(pre)?),
        })
    }

    pub(crate) fn instantiate(&self, store: &mut Store<Ctx>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::V0_1_0(pre) => Instance::V0_1_0(pre.instantiate(store)?),
            Pre::V0_2_0(pre) => Instance::V0_2_0(pre.instantiate(store)?),
            Pre::V0_3_0(pre) => Instance::V0_3_0(pre.instantiate(store)?),
            Pre::V0_4_0(pre) => Instance::V0_4_0(pre.instantiate(store)?),
        })
    }
}

pub(crate) enum Instance {
    V0_1_0(v0_1_0::Bot),
    V0_2_0(v0_2_0::Bot),
    V0_3_0(v0_3_0::Bot),
    V0_4_0(Bot),
}

impl Instance {
    pub(crate) fn call_init(
        &self,
        store: &mut Store<Ctx>,
        info: &HostInfo,
    ) -> wasmtime::Result<Result<GuestInfo, String>> {
        match self {
            Instance::V0_1_0(bot) => {
                Ok(bot.call_init(store, &info.clone().into())?.map(Into::into))
            }
            Instance::V0_2_0(bot) => {
                Ok(bot.call_init(store, &info.clone().into())?.map(Into::into))
            }
            Instance::V0_3_0(bot) => {
                Ok(bot.call_init(store, &info.clone().into())?.map(Into::into))
            }
            Instance::V0_4_0(bot) => bot.call_init(store, info),
        }
    }

    /// `None` when the guest's contract has no such event: it is not
    /// called.
    pub(crate) fn call_handle(
        &self,
        store: &mut Store<Ctx>,
        event: &Event,
    ) -> Option<wasmtime::Result<Result<(), String>>> {
        match self {
            Instance::V0_1_0(bot) => {
                let event = v0_1_0::event(event)?;
                Some(bot.call_handle(store, &event))
            }
            Instance::V0_2_0(bot) => {
                let event = v0_2_0::event(event)?;
                Some(bot.call_handle(store, &event))
            }
            Instance::V0_3_0(bot) => {
                let event = v0_3_0::event(event)?;
                Some(bot.call_handle(store, &event))
            }
            Instance::V0_4_0(bot) => Some(bot.call_handle(store, event)),
        }
    }
}
