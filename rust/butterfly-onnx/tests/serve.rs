//! `serve::serve_until`: the server runs on its own threads while the caller's `stop()` is
//! polled (and may block), answers requests meanwhile, and returns once `stop()` says so.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use butterfly_onnx::classifier::{Classifier, ClassifierOptions};
use butterfly_onnx::serve::{serve_until, ServeOptions, STOP_POLL};
use support::fixture;

fn get(address: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn serves_while_stop_blocks_the_calling_thread_and_returns_once_it_says_so() {
    let Some(fx) = fixture() else { return };
    let options =
        ClassifierOptions { ort_library: Some(fx.ort_library.clone()), threads: Some(1), ..Default::default() };
    let classifier = Arc::new(Classifier::open(fx.path("model.onnx"), options).unwrap());
    let (listening, address) = mpsc::channel();
    let (entered, in_stop) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let stop = Arc::new(AtomicBool::new(false));
    let asked = Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        let options = ServeOptions { port: 0, name: Some("m".into()), ..Default::default() };
        let mut first = true;
        serve_until(
            classifier,
            options,
            move |bound, name| listening.send((bound, name.to_string())).unwrap(),
            move || {
                if first {
                    // Blocks the calling thread, as a stop() waiting for Python's GIL would.
                    first = false;
                    entered.send(()).unwrap();
                    released.recv().unwrap();
                }
                asked.load(Ordering::SeqCst)
            },
        )
    });
    let (bound, name) = address.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(name, "m");
    in_stop.recv_timeout(Duration::from_secs(60)).unwrap();
    // Answered while stop() holds the calling thread (else these would time out).
    assert!(get(bound, "/v2/health/ready").starts_with("HTTP/1.1 200"));
    assert!(get(bound, "/v2/models/m").contains("\"name\":\"m\""));
    release.send(()).unwrap();
    stop.store(true, Ordering::SeqCst);
    let returned = Instant::now();
    server.join().unwrap().unwrap();
    assert!(returned.elapsed() < Duration::from_secs(10) + STOP_POLL);
    assert!(TcpStream::connect(bound).is_err(), "still listening after serve_until returned");
}
