//! iceoryx2's publish-subscribe as a frame channel (feature `iceoryx2` of this crate: its
//! build needs libclang). One publisher of `[u8]` slices, up to 4 subscribers, no
//! history, safe overflow (the publisher never waits: a full subscriber buffer drops its
//! oldest sample), subscriber buffers of 2. Subscribers copy each sample into their own
//! buffer, as qshm's readers do.

use iceoryx2::port::publisher::Publisher as IcePublisher;
use iceoryx2::port::subscriber::Subscriber as IceSubscriber;
use iceoryx2::prelude::*;

pub struct Publisher {
    _node: Node<ipc::Service>,
    publisher: IcePublisher<ipc::Service, [u8], ()>,
}

/// A node, iceoryx2's logging kept off stdout (where the benchmark's rows go) but for errors.
fn node() -> Node<ipc::Service> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .create::<ipc::Service>()
        .expect("iceoryx2 node")
}

/// The service, made by whoever comes first; up to 4 subscribers (the most the benchmark runs).
fn service(node: &Node<ipc::Service>, name: &str) -> PortFactory<ipc::Service, [u8], ()> {
    node.service_builder(&name.try_into().expect("service name"))
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(4)
        .history_size(0)
        .subscriber_max_buffer_size(2)
        .enable_safe_overflow(true)
        .open_or_create()
        .expect("iceoryx2 service")
}

type PortFactory<S, P, H> = iceoryx2::service::port_factory::publish_subscribe::PortFactory<S, P, H>;

impl Publisher {
    pub fn new(name: &str, max_len: usize) -> Publisher {
        let node = node();
        let publisher = service(&node, name)
            .publisher_builder()
            .initial_max_slice_len(max_len)
            .max_loaned_samples(1)
            .create()
            .expect("iceoryx2 publisher");
        Publisher {
            _node: node,
            publisher,
        }
    }

    pub fn publish(&self, frame: &[u8]) {
        let sample = self.publisher.loan_slice_uninit(frame.len()).expect("loan");
        sample.write_from_slice(frame).send().expect("send");
    }
}

pub struct Subscriber {
    _node: Node<ipc::Service>,
    subscriber: IceSubscriber<ipc::Service, [u8], ()>,
}

impl Subscriber {
    pub fn new(name: &str) -> Subscriber {
        let node = node();
        let subscriber = service(&node, name)
            .subscriber_builder()
            .buffer_size(2)
            .create()
            .expect("iceoryx2 subscriber");
        Subscriber {
            _node: node,
            subscriber,
        }
    }

    /// Copy the oldest buffered sample into `buf`; false when there is none.
    pub fn take_into(&self, buf: &mut [u8]) -> bool {
        match self.subscriber.receive().expect("receive") {
            Some(sample) => {
                let payload = sample.payload();
                buf[..payload.len()].copy_from_slice(payload);
                true
            }
            None => false,
        }
    }
}
