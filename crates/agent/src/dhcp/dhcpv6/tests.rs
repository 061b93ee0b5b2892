use super::*;

fn bytes(hex: &str) -> Vec<u8> {
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The client of the captured frames: `dhclient -6` (isc-dhcp-client 4.4)
/// on fa:16:3e:00:00:01.
fn lease(addresses: &[&str]) -> Dhcpv6Lease {
    let dns: Ipv6Addr = "fd00:6::53".parse().unwrap();
    Dhcpv6Lease {
        mac: "fa:16:3e:00:00:01".parse().unwrap(),
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        options: [(OPTION_DNS_SERVERS, dns.octets().to_vec())].into(),
    }
}

fn name(name: &str) -> dhcproto::Name {
    dhcproto::Name::from_ascii(name).unwrap()
}

fn solicit() -> Vec<u8> {
    bytes(include_str!("../testdata/dhclient6_solicit.hex"))
}

fn reply_of(frame: &[u8]) -> v6::Message {
    v6::Message::from_bytes(&frame[ETH_LEN + IPV6_LEN + UDP_LEN..]).unwrap()
}

fn addresses(message: &v6::Message) -> Vec<Ipv6Addr> {
    match message.opts().get(v6::OptionCode::IANA) {
        Some(DhcpOption::IANA(ia)) => ia
            .opts
            .iter()
            .filter_map(|o| match o {
                DhcpOption::IAAddr(a) => Some(a.addr),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

/// Golden bytes: the advertisement to a real `dhclient -6` solicit, checked
/// by `tcpdump -vv` (which decodes every option and verifies the checksum)
/// and accepted by dhclient itself in `e2e_ipv6`.
#[test]
fn solicit_gets_an_advertisement_of_exactly_the_ports_address() {
    let reply = respond(&solicit(), &lease(&["fd00:6::10"])).unwrap();
    assert_eq!(
        hex(&reply),
        include_str!("../testdata/vnet_dhcpv6_advertise.hex").trim()
    );
    let message = reply_of(&reply);
    assert_eq!(message.msg_type(), MessageType::Advertise);
    assert_eq!(
        addresses(&message),
        vec!["fd00:6::10".parse::<Ipv6Addr>().unwrap()]
    );
    let request = parse_request(&solicit()).unwrap();
    assert_eq!(message.xid(), request.message.xid());
    // To the client's link-local address and MAC, from the server's.
    assert_eq!(&reply[0..6], &lease(&[]).mac.0);
    assert_eq!(&reply[6..12], &SERVER_MAC.0);
    let source = Ipv6Addr::from(<[u8; 16]>::try_from(&reply[22..38]).unwrap());
    assert_eq!(source, SERVER_MAC.ipv6_link_local());
    assert_eq!(
        upper_layer_checksum(source, request.client_ip, UDP, &reply[ETH_LEN + IPV6_LEN..]),
        0
    );
}

#[test]
fn a_request_naming_this_server_gets_the_address_and_others_nothing() {
    let request = parse_request(&solicit()).unwrap();
    let mut message = request.message.clone();
    message.set_msg_type(MessageType::Request);
    message
        .opts_mut()
        .insert(DhcpOption::ServerId(server_duid()));
    let mut frame = solicit()[..ETH_LEN + IPV6_LEN + UDP_LEN].to_vec();
    let payload = message.to_vec().unwrap();
    frame.extend_from_slice(&payload);
    let len = (UDP_LEN + payload.len()) as u16;
    frame[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&len.to_be_bytes());
    let reply = respond(&frame, &lease(&["fd00:6::10"])).unwrap();
    let reply = reply_of(&reply);
    assert_eq!(reply.msg_type(), MessageType::Reply);
    assert_eq!(
        addresses(&reply),
        vec!["fd00:6::10".parse::<Ipv6Addr>().unwrap()]
    );
    assert_eq!(
        reply.opts().get(v6::OptionCode::DomainNameServers),
        Some(&DhcpOption::DomainNameServers(vec![
            "fd00:6::53".parse().unwrap()
        ]))
    );

    // Another server's request, another port's frame, a stateless-only port:
    // nothing.
    let mut other = message.clone();
    other
        .opts_mut()
        .insert(DhcpOption::ServerId(vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6]));
    let mut other_frame = frame[..ETH_LEN + IPV6_LEN + UDP_LEN].to_vec();
    other_frame.extend_from_slice(&other.to_vec().unwrap());
    assert_eq!(respond(&other_frame, &lease(&["fd00:6::10"])), None);
    let mut not_ours = lease(&["fd00:6::10"]);
    not_ours.mac = "fa:16:3e:00:00:02".parse().unwrap();
    assert_eq!(respond(&frame, &not_ours), None);
    assert_eq!(respond(&solicit(), &lease(&[])), None);
}

#[test]
fn information_request_gets_the_dns_servers_and_no_address() {
    let frame = bytes(include_str!(
        "../testdata/dhclient6_information_request.hex"
    ));
    let reply = respond(&frame, &lease(&[])).unwrap();
    assert_eq!(
        hex(&reply),
        include_str!("../testdata/vnet_dhcpv6_information_reply.hex").trim()
    );
    let reply = reply_of(&reply);
    assert_eq!(reply.msg_type(), MessageType::Reply);
    assert!(addresses(&reply).is_empty());
    assert_eq!(
        reply.opts().get(v6::OptionCode::DomainNameServers),
        Some(&DhcpOption::DomainNameServers(vec![
            "fd00:6::53".parse().unwrap()
        ]))
    );
}

/// Golden bytes: the reply to the same information request with the
/// agent's domain as the search list, checked by `tcpdump -vv`.
#[test]
fn information_reply_with_the_domain_search_list_golden() {
    let frame = bytes(include_str!(
        "../testdata/dhclient6_information_request.hex"
    ));
    let mut lease = lease(&[]);
    let (code, body) = extra_option("domain-search", "openstacklocal").unwrap();
    lease.options.insert(code, body);
    let reply = respond(&frame, &lease).unwrap();
    assert_eq!(
        hex(&reply),
        include_str!("../testdata/vnet_dhcpv6_information_reply_domain.hex").trim()
    );
}

#[test]
fn garbage_and_other_traffic_get_nothing() {
    let frame = solicit();
    for cut in [0, 13, 20, 54, 61, 70] {
        assert_eq!(respond(&frame[..cut], &lease(&["fd00:6::10"])), None);
    }
    let mut to_client = frame.clone();
    // Swap the ports: a server's message, not a client's.
    to_client[ETH_LEN + IPV6_LEN..ETH_LEN + IPV6_LEN + 4].copy_from_slice(&[2, 35, 2, 34]);
    assert_eq!(respond(&to_client, &lease(&["fd00:6::10"])), None);
}

#[test]
fn a_port_is_served_only_on_dhcpv6_subnets() {
    use compiler::protocol::{DhcpOptionSpec, FixedIpSpec, LocalPortSpec, SubnetSpec};
    let subnet = |cidr: &str, mode: Option<Ipv6Mode>| SubnetSpec {
        cidr: cidr.parse().unwrap(),
        gateway_ip: None,
        dns_nameservers: vec!["fd00:6::53".parse().unwrap(), "10.0.0.53".parse().unwrap()],
        host_routes: vec![],
        enable_dhcp: true,
        ipv6_ra_mode: mode,
        ipv6_address_mode: mode,
    };
    let net_with = |fixed: &[(&str, &str)], dhcpv6_options| NetworkSpec {
        vni: 7,
        mtu: 1450,
        physical_network: None,
        subnets: [
            (
                "full".to_owned(),
                subnet("fd00:6::/64", Some(Ipv6Mode::Dhcpv6Stateful)),
            ),
            (
                "info".to_owned(),
                subnet("fd00:7::/64", Some(Ipv6Mode::Dhcpv6Stateless)),
            ),
            (
                "slaac".to_owned(),
                subnet("fd00:8::/64", Some(Ipv6Mode::Slaac)),
            ),
        ]
        .into(),
        local_ports: [(
            "p".to_owned(),
            LocalPortSpec {
                mac: "fa:16:3e:00:00:01".parse().unwrap(),
                fixed_ips: fixed
                    .iter()
                    .map(|(s, ip)| FixedIpSpec {
                        subnet_id: (*s).to_owned(),
                        ip_address: ip.parse().unwrap(),
                    })
                    .collect(),
                device: "tapp".into(),
                admin_state_up: true,
                dhcpv4_options: vec![],
                dhcpv6_options,
            },
        )]
        .into(),
        remote_ports: Default::default(),
    };
    let net = |fixed: &[(&str, &str)]| net_with(fixed, vec![]);
    let none = DnsDomain::default();
    let stateful = net(&[("full", "fd00:6::10"), ("info", "fd00:7::1")]);
    assert_eq!(
        port_lease(&stateful, "p", &none),
        Some(lease(&["fd00:6::10"]))
    );
    assert_eq!(
        port_lease(&net(&[("info", "fd00:7::1")]), "p", &none),
        Some(lease(&[]))
    );
    assert_eq!(
        port_lease(&net(&[("slaac", "fd00:8::1")]), "p", &none),
        None
    );
    assert_eq!(port_lease(&stateful, "other", &none), None);

    // The agent's domain, then the port's own options over the subnets'.
    let domain: DnsDomain = "openstacklocal".parse().unwrap();
    let mut expected = lease(&[]);
    expected
        .options
        .insert(OPTION_DOMAIN_LIST, b"\x0eopenstacklocal\0".to_vec());
    assert_eq!(
        port_lease(&net(&[("info", "fd00:7::1")]), "p", &domain),
        Some(expected)
    );
    let opt = |name: &str, value: &str| DhcpOptionSpec {
        name: name.into(),
        value: value.into(),
    };
    let own = net_with(
        &[("info", "fd00:7::1")],
        vec![
            opt("dns-server", "[fd00:9::53],fd00:9::54"),
            opt("option6:domain-search", "a.example,b.example"),
            opt("tftp-server", "10.0.0.1"),
            opt("sntp-server", "not an address"),
        ],
    );
    let reply = reply_of(
        &respond(
            &bytes(include_str!(
                "../testdata/dhclient6_information_request.hex"
            )),
            &port_lease(&own, "p", &domain).unwrap(),
        )
        .unwrap(),
    );
    assert_eq!(
        reply.opts().get(v6::OptionCode::DomainNameServers),
        Some(&DhcpOption::DomainNameServers(vec![
            "fd00:9::53".parse().unwrap(),
            "fd00:9::54".parse().unwrap(),
        ]))
    );
    assert_eq!(
        reply.opts().get(v6::OptionCode::DomainSearchList),
        Some(&DhcpOption::DomainSearchList(vec![
            name("a.example."),
            name("b.example."),
        ]))
    );
    assert_eq!(
        reply.opts().iter().count(),
        4,
        "client id, server id, DNS servers, domain search: nothing of the \
         options it cannot say"
    );
}

#[test]
fn extra_options_say_what_dnsmasq_would() {
    let addr = |a: &str| a.parse::<Ipv6Addr>().unwrap().octets().to_vec();
    assert_eq!(
        extra_option("23", "fd00::1"),
        Some((OPTION_DNS_SERVERS, addr("fd00::1")))
    );
    assert_eq!(
        extra_option("sntp-server", "fd00::1, fd00::2"),
        Some((
            OPTION_SNTP_SERVERS,
            [addr("fd00::1"), addr("fd00::2")].concat()
        ))
    );
    assert_eq!(
        extra_option("information-refresh-time", "3600"),
        Some((
            OPTION_INFORMATION_REFRESH_TIME,
            3600u32.to_be_bytes().to_vec()
        ))
    );
    assert_eq!(
        extra_option("ntp-server", "fd00::1"),
        Some((
            OPTION_NTP_SERVER,
            [vec![0, 1, 0, 16], addr("fd00::1")].concat()
        ))
    );
    assert_eq!(
        extra_option("bootfile-url", "tftp://[fd00::1]/boot"),
        Some((OPTION_BOOTFILE_URL, b"tftp://[fd00::1]/boot".to_vec()))
    );
    assert_eq!(
        extra_option("bootfile-param", "a,bc"),
        Some((OPTION_BOOTFILE_PARAM, b"\0\x01a\0\x02bc".to_vec()))
    );
    assert_eq!(
        extra_option("domain-search", "example.org."),
        Some((OPTION_DOMAIN_LIST, b"\x07example\x03org\0".to_vec()))
    );
    for (name, value) in [
        ("domain-search", "a..b"),
        ("domain-search", "has space"),
        ("dns-server", "10.0.0.1"),
        ("information-refresh-time", "-1"),
        ("bootfile-name", "pxelinux.0"),
        ("99", "x"),
    ] {
        assert_eq!(extra_option(name, value), None, "{name}={value}");
    }
    assert!("".parse::<DnsDomain>().unwrap() == DnsDomain::default());
    assert!("bad domain".parse::<DnsDomain>().is_err());
    assert!(
        format!("{}.x", "a".repeat(64))
            .parse::<DnsDomain>()
            .is_err()
    );
}

/// Found by the `dhcpv6` fuzz target: a status code option of length 0
/// inside an IA_NA made dhcproto subtract past zero.
#[test]
fn options_too_short_for_their_kind_are_refused_not_decoded() {
    let crash = bytes(
        "333300010002fa163e00000186dd60074a9b003011000000008000003400f816\
         3efffe000001ff02006600000000000000000001000202220223003032e00b7b\
         23c60001000e0001000131a88319fa163e23003e000d00000000000000000800\
         27001f000800020000",
    );
    assert_eq!(respond(&crash, &lease(&["fd00:c::10"])), None);
    // The option walk itself: a status code needs its 2-byte code, a
    // vendor class its 4-byte enterprise number, nested ones included.
    let status = |len: u16| [&[0, 13][..], &len.to_be_bytes(), &vec![0; len.into()]].concat();
    assert!(options_decodable(&status(2)));
    assert!(!options_decodable(&status(1)));
    let ia_na = |inner: &[u8]| {
        let len = u16::try_from(12 + inner.len()).unwrap();
        [&[0, 3][..], &len.to_be_bytes(), &[0; 12], inner].concat()
    };
    assert!(options_decodable(&ia_na(&status(2))));
    assert!(!options_decodable(&ia_na(&status(0))));
    assert!(!options_decodable(&[0, 16, 0, 3, 0, 0, 0]));
    // Read by their kind's size whatever their length says: lengths must match.
    assert!(options_decodable(&[0, 7, 0, 1, 255]));
    assert!(!options_decodable(&[0, 7, 0, 0, 0, 16, 0, 3, 0, 0, 0]));
    assert!(!options_decodable(&[0, 14, 0, 1, 0]));
    assert!(!decodable(&[12, 0, 0, 0]), "a relay message");
}
