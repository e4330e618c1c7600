use super::*;

fn stack(status: Status) -> StackReport {
    StackReport { stack: "s".into(), status, findings: Vec::new(), pending: Vec::new(), detail: None, history_entry: None, seconds: 0.0 }
}

#[test]
fn the_exit_code_is_the_worst_stack_s_and_a_busy_stack_does_not_raise_it() {
    let code = |s: &[Status]| exit_code(&s.iter().map(|s| stack(*s)).collect::<Vec<_>>());
    assert_eq!(code(&[]), EXIT_IN_SYNC);
    assert_eq!(code(&[Status::InSync, Status::Busy]), EXIT_IN_SYNC);
    assert_eq!(code(&[Status::InSync, Status::Repaired]), EXIT_REPAIRED);
    assert_eq!(code(&[Status::WouldRepair]), EXIT_REPAIRED);
    assert_eq!(code(&[Status::NeedsPerson, Status::Repaired]), EXIT_NEEDS_PERSON);
    assert_eq!(code(&[Status::Repaired, Status::Error, Status::NeedsPerson]), EXIT_ERROR);
}

#[test]
fn the_exit_codes_do_not_clash_with_the_other_commands() {
    // 2: usage; 3: deploy could not put the live release back; 4, 5: gate and promote; 10: plan.
    for code in [EXIT_REPAIRED, EXIT_NEEDS_PERSON] {
        assert!(![2, 3, 4, 5, crate::dry_run::EXIT_CHANGES].contains(&code), "{code}");
    }
}
