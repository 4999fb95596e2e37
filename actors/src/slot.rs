//! Where a long-lived actor is found: a shared, replaceable reference. The root supervisor puts
//! a restarted actor into its slot, so sessions, the gateway and the API keep reaching it after a
//! crash without holding a stale `ActorRef`.

use std::sync::{Arc, RwLock};

use ractor::{ActorRef, Message};

pub struct ActorSlot<M: Message>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M: Message> Clone for ActorSlot<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: Message> Default for ActorSlot<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M: Message> std::fmt::Debug for ActorSlot<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorSlot(set: {})", self.get().is_some())
    }
}

impl<M: Message> ActorSlot<M> {
    pub fn set(&self, actor: ActorRef<M>) {
        // A poisoned lock still holds a valid reference: every write is one assignment.
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(actor);
    }

    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends without waiting; false when the actor is not running (between a crash and its
    /// restart, or after shutdown).
    pub fn cast(&self, msg: M) -> bool {
        self.get().is_some_and(|a| a.cast(msg).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr};

    struct Echo;
    impl Actor for Echo {
        type Msg = ractor::RpcReplyPort<u32>;
        type State = u32;
        type Arguments = u32;
        async fn pre_start(
            &self,
            _: ActorRef<Self::Msg>,
            n: u32,
        ) -> Result<u32, ActorProcessingErr> {
            Ok(n)
        }
        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            reply: Self::Msg,
            n: &mut u32,
        ) -> Result<(), ActorProcessingErr> {
            let _ = reply.send(*n);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_replaced_actor_is_reached_through_the_same_slot() {
        let slot = ActorSlot::default();
        let (tx, _rx) = tokio::sync::oneshot::channel::<u32>();
        assert!(!slot.cast(tx.into()), "an empty slot reaches nobody");
        let (first, h1) = Actor::spawn(None, Echo, 1).await.unwrap();
        slot.set(first.clone());
        let shared = slot.clone();
        let got = ractor::call!(shared.get().unwrap(), |r| r).unwrap();
        assert_eq!(got, 1);
        first.stop(None);
        h1.await.unwrap();
        let (second, h2) = Actor::spawn(None, Echo, 2).await.unwrap();
        slot.set(second.clone());
        let got = ractor::call!(shared.get().unwrap(), |r| r).unwrap();
        assert_eq!(got, 2);
        second.stop(None);
        h2.await.unwrap();
    }
}
