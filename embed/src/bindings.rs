//! Host bindings generated from `wit/surfaces.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "bot",
    additional_derives: [PartialEq, Eq],
    // A failing host store must fail the event, not read as "no such key".
    imports: {
        "surfaces:bot/store.get": trappable,
        "surfaces:bot/store.keys": trappable,
        "surfaces:bot/store.keys-page": trappable,
    },
});
